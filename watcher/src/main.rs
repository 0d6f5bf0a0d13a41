//! `prism-watcher`: the dev loop (watch sources, rebuild, reload running
//! plugins). Not built yet — tracked as the packaging/dev-loop issue; this
//! binary exists so the workspace layout and binary names are final.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("prism-watcher {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "prism-watcher: the watch/rebuild/reload loop is not implemented yet; \
         use `cargo watch` or rebuild with `make build-debug` meanwhile"
    );
    if args.iter().any(|a| a == "--help" || a == "-h") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
