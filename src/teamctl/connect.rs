//! Where teamctl's calls go, and in which namespace, resolved as kubectl resolves them.
//!
//! - `--gateway URL` (member pods get it from the operator as TEAM_GATEWAY_URL): straight to the
//!   gateway, with `--token` / `--token-file` as the bearer.
//! - Otherwise through the Kubernetes API server, to the gateway's APIService, with whatever the
//!   kubeconfig holds (client certificate, exec plugin, token, OIDC) or the in-cluster account:
//!   `--kubeconfig` (else KUBECONFIG, else ~/.kube/config, else in-cluster), `--context`.
//!
//! The namespace is `-n`, else (through the API server) the kubeconfig context's; `-A` means every
//! namespace. With `--gateway` only `-n` names one: a member pod acts in its own, whatever
//! kubeconfig the shell around it may have.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::cli::Cli;
use crate::gateway::client::{GatewayClient, Token};

/// The resolved target of a command line.
pub(crate) struct Target {
    pub(crate) client: GatewayClient,
    /// None: the caller's own (member pods), or every namespace (`-A`).
    pub(crate) namespace: Option<String>,
    /// The kube client, when the kubeconfig was loaded (through the API server).
    pub(crate) kube: Option<kube::Client>,
}

/// Refuses flags that do not go together, before anything is called.
pub(super) fn check(cli: &Cli) -> Result<(), String> {
    if cli.gateway.is_none() && (cli.token.is_some() || cli.token_file.is_some()) {
        return Err("--token and --token-file (TEAM_TOKEN, TEAM_TOKEN_FILE) go with --gateway; without it teamctl calls through the API server with the kubeconfig's credentials".into());
    }
    if cli.gateway.is_some() && (cli.kubeconfig.is_some() || cli.context.is_some()) && !matches!(cli.command, super::Command::Watch(_)) {
        return Err("--kubeconfig and --context choose the API server to call through; with --gateway the gateway is called directly (only `watch` reads the API server then)".into());
    }
    Ok(())
}

pub(crate) async fn connect(cli: &Cli) -> Result<Target, String> {
    if let Some(url) = &cli.gateway {
        let token = match (&cli.token, &cli.token_file) {
            (Some(t), _) => Token::Literal(t.clone()),
            (None, Some(f)) => Token::File(f.clone()),
            (None, None) => Token::None,
        };
        let client = GatewayClient::new(url, token).map_err(|e| e.to_string())?;
        return Ok(Target { client, namespace: cli.namespace.clone(), kube: None });
    }
    let config = kube_config(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let namespace = if cli.all_namespaces { None } else { Some(cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone())) };
    let kube = kube::Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    Ok(Target { client: GatewayClient::through_api_server(kube.clone(), &cli.api_group), namespace, kube: Some(kube) })
}

/// A kube client of the kubeconfig `cli` names (or of the pod's account).
pub(crate) async fn kube_client(cli: &Cli) -> Result<kube::Client, String> {
    let config = kube_config(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    kube::Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// The client configuration of the kubeconfig (or the pod's account), naming what failed.
async fn kube_config(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Config, String> {
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| format!("--kubeconfig {}: {e}", path.display()))
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options).await.map_err(|e| format!("kubeconfig: {e}")),
        None => kube::Config::infer().await.map_err(|e| format!("no Kubernetes credentials (kubeconfig or in-cluster): {e}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn tokens_go_with_the_gateway_and_kubeconfigs_without_it() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("teamctl").chain(args.iter().copied())).unwrap();
        assert!(check(&parse(&["--token", "t", "get", "teams"])).unwrap_err().contains("--gateway"));
        assert!(check(&parse(&["--gateway", "http://gw", "--token", "t", "get", "teams"])).is_ok());
        assert!(check(&parse(&["--gateway", "http://gw", "--context", "c", "get", "teams"])).unwrap_err().contains("--context"));
        assert!(check(&parse(&["--gateway", "http://gw", "--context", "c", "watch"])).is_ok());
        assert!(check(&parse(&["--context", "c", "get", "teams"])).is_ok());
    }
}
