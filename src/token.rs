//! `envelope-router token --sub alice`: prints a development token.

use anyhow::{Context, bail};
use ingest_http::auth::mint_dev_token;
use pipeline::UserUrn;

use crate::config::{GlobalArgs, TokenArgs};
use crate::dev_secret;

/// Prints an HS256 token for `args.sub`, signed with JWT_SECRET or the dev secret.
pub fn run(global: &GlobalArgs, args: &TokenArgs) -> anyhow::Result<()> {
    let user = UserUrn::parse(&args.sub).context("--sub is not a valid user")?;
    let secret = match &global.jwt_secret {
        Some(secret) => secret.clone(),
        None if global.jwt_jwks_url.is_some() => {
            bail!("JWT_JWKS_URL is set: tokens come from your issuer, not from this command")
        }
        None => dev_secret::load_or_create(&global.data_dir)?.0,
    };
    let token = mint_dev_token(
        &secret,
        user.as_str(),
        args.ttl,
        global.jwt_issuer.as_deref(),
        global.jwt_audience.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}
