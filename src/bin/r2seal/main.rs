//! The `r2seal` binary: parse arguments, run one command, print any error once.
#![forbid(unsafe_code)]

mod cli;
mod gateway_cmd;
mod io;
mod jobs_cmd;
mod keys_cmd;
mod local;
mod objects;
mod pipeline;
mod rotate_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

/// mimalloc, not glibc's malloc: the gateway and bucket jobs allocate per request (aws-sdk,
/// hyper, s3s). Measured on 2,000 small uploads through the gateway: 15% less gateway CPU,
/// 10% less wall time (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    io::take_env_passphrase();
    let cli = Cli::parse();
    // The gateway drains on Ctrl-C/SIGTERM instead (gateway_cmd.rs).
    if !matches!(cli.command, Command::Gateway(_)) {
        if let Err(e) = remove_temps_on_signal() {
            eprintln!("r2seal: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `r2seal open … | head` is a success, as it is for cat.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("r2seal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { output, passphrase } => keys_cmd::keygen(output.as_deref(), passphrase),
        Command::Recipient { identities } => keys_cmd::recipient(&identities),
        Command::Seal {
            recipients,
            name,
            output,
            input,
        } => local::seal(&recipients, name, output.as_deref(), input.as_deref()),
        Command::Open {
            identities,
            name,
            range,
            output,
            input,
        } => local::open(
            &identities,
            name.as_deref(),
            range.as_deref(),
            output.as_deref(),
            input.as_deref(),
        ),
        Command::Inspect { json, input } => local::inspect(json, input.as_ref()),
        Command::Key(cmd) => keys_cmd::key(cmd),
        Command::Put(args) => objects::put(args),
        Command::Get(args) => objects::get(args),
        Command::Cat(args) => objects::cat(args),
        Command::Ls(args) => objects::ls(args),
        Command::Rm(args) => objects::rm(args),
        Command::Head(args) => objects::head(args),
        Command::Cp(args) => objects::copy(args, false),
        Command::Mv(args) => objects::copy(args, true),
        Command::Cleanup(args) => objects::cleanup(args),
        Command::Bucket(cmd) => objects::bucket(cmd),
        Command::Migrate(args) => jobs_cmd::migrate(args),
        Command::Verify(args) => jobs_cmd::verify(args),
        Command::Gateway(args) => gateway_cmd::run(args),
        Command::Rotate(args) => rotate_cmd::rotate(args),
        Command::Export(args) => rotate_cmd::export(args),
        Command::Import(args) => rotate_cmd::import(args),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "r2seal", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
            Ok(())
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: remove every temp file this process registered (partial,
/// unauthenticated plaintext among them) and exit as a shell expects of a process the
/// signal ended (128 + the signal's number). The handlers are installed before this
/// returns, so no temp file is ever created without them.
fn remove_temps_on_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut interrupt, mut terminate, mut hangup) = {
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::Builder::new()
        .name("r2seal-signals".into())
        .spawn(move || {
            let code = rt.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => 130,
                    _ = terminate.recv() => 143,
                    _ = hangup.recv() => 129,
                }
            });
            // Held until the process is gone: no temp file is renamed into place after
            // its siblings were removed.
            let _registry = r2seal::tempfiles::remove_all();
            std::process::exit(code);
        })?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
