//! `moon-cli`: the operator's tool for Moon data directories (migrate-aof, check-aof,
//! manifest show). It works offline, on files, and never on a directory a server has locked.

fn main() {
    eprintln!(
        "moon-cli: no subcommands yet (migrate-aof, check-aof and manifest show are planned)"
    );
    std::process::exit(2);
}
