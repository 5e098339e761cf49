//! `kumulus completions SHELL`: a completion script for bash, zsh, fish,
//! elvish or PowerShell, on stdout.

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

pub fn run(args: &CompletionsArgs, mut command: clap::Command) -> String {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "kumulus", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
