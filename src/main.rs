//! `cace`: the command-line front end of cace-net. Each subcommand lives in `cli/`.

mod cli;

fn main() {
    cace_net::init_runtime();
    install_panic_hook();
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A panic is a bug in cace, not a user error: say so in one line naming the command, and keep
/// the raw report (with the backtrace) for `RUST_BACKTRACE=1`.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            return default(info);
        }
        let command = std::env::args().nth(1).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        eprintln!(
            "error: internal error in `cace {command}`: {msg}{at}. This is a bug in cace: please \
             report it with the command and the output of the same run with RUST_BACKTRACE=1."
        );
    }));
}
