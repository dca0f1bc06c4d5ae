//! `agnhost pause`: prints `Paused` and waits for a signal; SIGINT exits 1 and SIGTERM
//! exits 2, as `test/images/agnhost/pause` does.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

use super::go;

/// The signals pause stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Interrupt,
    Terminate,
}

/// `agnhost pause`.
pub(crate) async fn main(args: &[String]) -> i32 {
    let flags = match super::parse_flags("pause", args, &[]) {
        Ok(flags) => flags,
        Err(code) => return code,
    };
    if !flags.positional.is_empty() {
        let received = flags.positional.len();
        let message = format!("accepts at most 0 arg(s), received {received}");
        return super::usage_error("pause", &message);
    }
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(err), _) | (_, Err(err)) => {
            go::log(format!("cannot watch for signals: {err}"));
            return 1;
        }
    };
    run(async {
        tokio::select! {
            _ = interrupt.recv() => Stop::Interrupt,
            _ = terminate.recv() => Stop::Terminate,
        }
    })
    .await
}

/// Prints `Paused`, waits for `stopped` and returns the exit code for its signal.
pub(crate) async fn run(stopped: impl Future<Output = Stop>) -> i32 {
    println!("Paused");
    match stopped.await {
        Stop::Interrupt => 1,
        Stop::Terminate => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_code_names_the_signal() {
        assert_eq!(run(std::future::ready(Stop::Interrupt)).await, 1);
        assert_eq!(run(std::future::ready(Stop::Terminate)).await, 2);
    }

    #[tokio::test]
    async fn waits_until_signalled() {
        let waiting = run(std::future::pending());
        let outcome = tokio::time::timeout(std::time::Duration::from_millis(50), waiting).await;
        assert!(outcome.is_err(), "pause returned without a signal");
    }
}
