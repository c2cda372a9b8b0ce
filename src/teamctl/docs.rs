//! `teamctl completion <shell>` and `teamctl man`: generated from the clap definition, so they
//! never drift from the flags.

use clap::CommandFactory;

use super::cli::Cli;

/// The command as the program was called: `kubectl team` when run as the kubectl plugin.
pub(super) fn command(bin: &'static str) -> clap::Command {
    Cli::command().name(bin).bin_name(bin)
}

/// Writes the completion script of `shell` for `bin` to stdout.
pub(super) fn completion(shell: clap_complete::Shell, bin: &'static str) -> u8 {
    let mut cmd = command(bin);
    clap_complete::generate(shell, &mut cmd, bin, &mut std::io::stdout());
    super::EXIT_OK
}

/// Writes the man page (roff) to stdout.
pub(super) fn man(bin: &'static str) -> u8 {
    let page = clap_mangen::Man::new(command(bin));
    match page.render(&mut std::io::stdout()) {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("error: writing the man page: {e}");
            super::EXIT_UNAVAILABLE
        }
    }
}
