//! The node task: fires the core's timers. Everything else reaches the node from the
//! connection and dialer tasks.

use embassy_futures::select::select;
use embassy_time::{Instant, Timer};

use crate::shell::Context;

/// The node's clock: milliseconds since the executor's time started.
pub(crate) fn now_ms() -> u64 {
    Instant::now().as_millis()
}

/// Sleeps until the node's next timer, or until another task moved it earlier (it signals
/// after every drain), then runs what is due.
#[embassy_executor::task]
pub(crate) async fn run(context: &'static Context) -> ! {
    loop {
        // At most a minute ahead: a node with no timer set answers `u64::MAX`.
        let due_ms = context
            .with(|shell| shell.node.poll_timeout())
            .min(now_ms() + 60_000);
        if due_ms > now_ms() {
            let sleep = Timer::at(Instant::from_millis(due_ms));
            select(sleep, context.wakers.node.wait()).await;
        }
        if context.with(|shell| shell.node.poll_timeout()) <= now_ms() {
            context.with(|shell| shell.timeout(&context.wakers));
        }
    }
}
