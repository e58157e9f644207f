//! `cace`: the command-line front end of cace-net. Each subcommand lives in `cli/`.

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
