//! agnhost, the Kubernetes e2e test image (`registry.k8s.io/e2e-test-images/agnhost`):
//! the subcommands pods of network tests and tutorials run — `netexec`,
//! `serve-hostname`, `connect` and `pause` — with agnhost's flags, answers and log lines.
//!
//! Like agnhost (whose `main` ignores what cobra returns), a missing subcommand prints
//! the help and a bad flag prints an error, and both exit 0.

mod connect;
mod go;
mod netexec;
mod pause;
mod serve_hostname;

use tokio::signal::unix::{signal, SignalKind};

use super::flags::{self, Flags, Kind};

/// The subcommands kubesim runs.
pub(crate) const SUBCOMMANDS: [&str; 4] = ["connect", "netexec", "pause", "serve-hostname"];

/// klog's flags, which agnhost accepts before or after any subcommand.
const KLOG_FLAGS: &[(&str, Kind)] = &[
    ("add_dir_header", Kind::Bool),
    ("alsologtostderr", Kind::Bool),
    ("log_backtrace_at", Kind::Value),
    ("log_dir", Kind::Value),
    ("log_file", Kind::Value),
    ("log_file_max_size", Kind::Value),
    ("logtostderr", Kind::Bool),
    ("one_output", Kind::Bool),
    ("skip_headers", Kind::Bool),
    ("skip_log_headers", Kind::Bool),
    ("stderrthreshold", Kind::Value),
    ("v", Kind::Value),
    ("vmodule", Kind::Value),
];

/// The position of the subcommand in agnhost's arguments: the first one that is neither
/// a flag nor a klog flag's value.
pub(crate) fn subcommand_index(args: &[String]) -> Option<usize> {
    let mut skip_value = false;
    for (i, arg) in args.iter().enumerate() {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if let Some(name) = arg.strip_prefix("--") {
            skip_value = !name.contains('=') && KLOG_FLAGS.contains(&(name, Kind::Value));
        } else if !arg.starts_with('-') || arg == "-" {
            return Some(i);
        }
    }
    None
}

/// `agnhost <args>`: runs the subcommand and returns the exit code.
pub(crate) async fn main(args: &[String]) -> i32 {
    let Some(index) = subcommand_index(args) else {
        print!("{HELP}");
        return 0;
    };
    let mut rest = args.to_vec();
    let subcommand = rest.remove(index);
    match subcommand.as_str() {
        "connect" => connect::main(&rest).await,
        "netexec" => netexec::main(&rest).await,
        "pause" => pause::main(&rest).await,
        "serve-hostname" => serve_hostname::main(&rest).await,
        "help" => {
            print!("{HELP}");
            0
        }
        other => {
            eprintln!("Error: unknown command {other:?} for \"app\"");
            eprintln!("Run 'app --help' for usage.");
            0
        }
    }
}

/// cobra's help for agnhost's root command, listing what kubesim runs.
const HELP: &str = "Usage:\n  app [command]\n\nAvailable Commands:\n\
     \x20 connect         Attempts a TCP, UDP or SCTP connection and returns useful errors\n\
     \x20 help            Help about any command\n\
     \x20 netexec         Creates HTTP(S), UDP, and (optionally) SCTP servers with various endpoints\n\
     \x20 pause           Pauses the execution\n\
     \x20 serve-hostname  Serves the hostname\n\n\
     Flags:\n  -h, --help   help for app\n\n\
     Use \"app [command] --help\" for more information about a command.\n";

/// Parses a subcommand's flags (and klog's); on failure or `--help` reports as cobra
/// does and gives the exit code to return.
fn parse_flags(subcommand: &str, args: &[String], spec: &[(&str, Kind)]) -> Result<Flags, i32> {
    let spec: Vec<(&str, Kind)> = spec.iter().chain(KLOG_FLAGS).copied().collect();
    flags::parse(args, &spec).map_err(|err| match err {
        flags::Error::Help => {
            println!("Usage:\n  app {subcommand} [flags]");
            0
        }
        err => flag_error(subcommand, &err),
    })
}

/// A bad flag value, reported as cobra does.
fn flag_error(subcommand: &str, err: &flags::Error) -> i32 {
    usage_error(subcommand, &err.to_string())
}

/// cobra's report of a usage error; agnhost still exits 0.
fn usage_error(subcommand: &str, message: &str) -> i32 {
    eprintln!("Error: {message}");
    eprintln!("Run 'app {subcommand} --help' for usage.");
    0
}

/// Completes when the process receives SIGTERM (never, if the handler cannot be set).
async fn sigterm() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(err) => {
            go::log(format!("cannot watch for SIGTERM: {err}"));
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn subcommand_skips_klog_flags() {
        assert_eq!(
            subcommand_index(&strings(&["netexec", "--http-port=80"])),
            Some(0)
        );
        assert_eq!(subcommand_index(&strings(&["--v=2", "pause"])), Some(1));
        assert_eq!(subcommand_index(&strings(&["--v", "2", "pause"])), Some(2));
        assert_eq!(
            subcommand_index(&strings(&["--logtostderr", "pause"])),
            Some(1)
        );
        assert_eq!(subcommand_index(&strings(&["--help"])), None);
        assert_eq!(subcommand_index(&[]), None);
    }

    #[tokio::test]
    async fn no_subcommand_or_an_unknown_one_exits_zero_like_agnhost() {
        assert_eq!(main(&[]).await, 0);
        assert_eq!(main(&strings(&["frobnicate"])).await, 0);
        assert_eq!(main(&strings(&["netexec", "--nope"])).await, 0);
        assert_eq!(main(&strings(&["netexec", "extra"])).await, 0);
    }
}
