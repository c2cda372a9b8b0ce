//! `--runtime exec`: any command. Each turn is a new run of it, with the turn's text on stdin
//! and `TEAM_TURN` (1, 2, …) in its environment; it keeps its own state between runs.

use super::runtime::{Adapter, TurnCommand, split};

pub(super) struct Exec {
    cmd: Vec<String>,
}

impl Exec {
    pub(super) fn new(cmd: Vec<String>) -> Self {
        Exec { cmd }
    }
}

impl Adapter for Exec {
    fn turn(&mut self, turn: u32, text: &str) -> TurnCommand {
        let (program, args) = split(&self.cmd);
        TurnCommand { program, args, env: vec![("TEAM_TURN".into(), turn.to_string())], stdin: Some(text.to_owned()) }
    }
}
