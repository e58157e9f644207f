//! `cace`: the command-line front end of cace-net. Each subcommand lives in `cli/`.

mod cli;

fn main() {
    cace_net::init_runtime();
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
