use std::ffi::OsString;
use std::process::ExitCode;

use mqtt_whisk_provider::app::App;
use mqtt_whisk_provider::cli::Cli;
use mqtt_whisk_provider::config::{Config, render_check, unknown_variables};
use mqtt_whisk_provider::{shutdown, telemetry};

// One thread: every message hops between the MQTT loop, the forwarder and the HTTP
// connection, and on a multi-threaded runtime each hop woke another worker; the
// benchmark measured half the CPU per message on one thread, and the same peak rate.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let config = match Config::from_env(env.iter().cloned(), cli.dry_run) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let unknown = unknown_variables(env.iter().filter_map(|(name, _)| name.to_str()));
    if cli.check {
        print!("{}", render_check(&config));
        for variable in unknown {
            println!("warning: {variable}");
        }
        return ExitCode::SUCCESS;
    }
    telemetry::init(config.log_format);
    for variable in unknown {
        tracing::warn!("{variable}");
    }
    let result = match App::build(config).await {
        Ok(app) => app.run_until_stopped(shutdown::signal_received()).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "fatal");
            ExitCode::FAILURE
        }
    }
}
