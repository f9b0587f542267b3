//! A password kept out of logs: the server's `--requirepass` and a client's `--password`.

/// A client password. Its `Debug` hides it, so that printing the configuration (or an
/// error holding it) can never put it in a log.
///
/// It is what the flag and the TOML key parse into (`FromStr`, `Deserialize`), so the
/// password is never held in a plain `String` that a `{:?}` of the arguments would print.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The password's bytes, to compare (in constant time) or to send.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(text))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let password: Password = "hunter2-secret".parse().unwrap();
        assert_eq!(password.expose(), b"hunter2-secret");
        assert!(!format!("{password:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&password)).contains("hunter2"));
    }
}
