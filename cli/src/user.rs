//! `tessera user ...`: create, list and revoke the users who may read and
//! write keys or administer the cluster (admin role; see
//! `tessera_security::users` for how a request is authorized).
//!
//! `create` prints the new user's token once, as the last line (with
//! `-o json`, in the `token` field); the directory keeps only its hash, so
//! a lost token is replaced by revoking the user and creating it again.
//! `list` never shows tokens. The built-in `admin` (the client
//! certificate `admin`) is listed too, and can be neither created nor
//! revoked.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tessera_proto::directorypb::{Role, User};
use tessera_security::users::BUILTIN_ADMIN;

use crate::conn::Ctx;
use crate::output;

/// User commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a user with a role; prints its bearer token once, as the last
    /// line (give it to the user: `--token` / TESSERA_TOKEN, or the SDK's
    /// `Security::with_token`).
    Create(CreateArgs),
    /// List the users and their roles (never their tokens).
    List,
    /// Delete a user: its token and its client certificate stop working
    /// everywhere within seconds.
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The user's name: letters, digits, `.`, `_` and `-` (also the name of
    /// a client certificate, `tessera cert create-client NAME`, that acts
    /// as this user).
    pub name: String,
    /// What the user may do: `readonly` reads keys; `readwrite` also
    /// writes them; `admin` may also split and move regions, manage
    /// keyspaces, stores, members and users.
    #[arg(long, value_enum)]
    pub role: RoleArg,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The user to delete.
    pub name: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    Readonly,
    Readwrite,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Readonly => Role::Readonly,
            RoleArg::Readwrite => Role::Readwrite,
            RoleArg::Admin => Role::Admin,
        }
    }
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    let dir = ctx.directory()?;
    match command {
        Command::Create(args) => {
            let (user, token) = dir.create_user(&args.name, args.role.into()).await?;
            let view = UserView::new(&user, false);
            if ctx.output.is_json() {
                #[derive(Serialize)]
                struct Created<'a> {
                    #[serde(flatten)]
                    user: &'a UserView,
                    token: &'a str,
                }
                return output::print_json(&Created {
                    user: &view,
                    token: &token,
                });
            }
            output::say(format!(
                "created user {} with the role {}; its token (shown only now):",
                view.name, view.role
            ));
            output::say(&token);
            Ok(())
        }
        Command::List => {
            let mut views = vec![UserView::builtin_admin()];
            views.extend(
                dir.list_users()
                    .await?
                    .iter()
                    .map(|u| UserView::new(u, false)),
            );
            if ctx.output.is_json() {
                return output::print_json(&views);
            }
            let mut t = output::table(&["NAME", "ROLE", "SIGNS IN WITH", "CREATED (UTC)"]);
            for v in &views {
                t.add_row(vec![
                    v.name.clone(),
                    v.role.to_string(),
                    v.signs_in_with.to_string(),
                    v.created.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            output::print_table(&t);
            Ok(())
        }
        Command::Revoke(args) => {
            dir.revoke_user(&args.name).await?;
            if ctx.output.is_json() {
                return output::print_json(&serde_json::json!({ "revoked": args.name }));
            }
            output::say(format!(
                "revoked user {}: its token and certificate stop working within seconds",
                args.name
            ));
            Ok(())
        }
    }
}

/// A user as the CLI shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub name: String,
    /// `readonly`, `readwrite` or `admin`.
    pub role: &'static str,
    /// `token or certificate`, or `certificate` for the built-in admin.
    pub signs_in_with: &'static str,
    pub builtin: bool,
    /// When it was created (UTC), unless built in.
    pub created: Option<String>,
}

impl UserView {
    fn new(u: &User, builtin: bool) -> Self {
        UserView {
            name: u.name.clone(),
            role: role_name(u.role),
            signs_in_with: if builtin {
                "certificate"
            } else {
                "token or certificate"
            },
            builtin,
            created: (u.created_unix_ms > 0).then(|| utc(u.created_unix_ms)),
        }
    }

    fn builtin_admin() -> Self {
        let admin = User {
            name: BUILTIN_ADMIN.into(),
            role: Role::Admin as i32,
            ..Default::default()
        };
        UserView::new(&admin, true)
    }
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Readonly) => "readonly",
        Ok(Role::Readwrite) => "readwrite",
        Ok(Role::Admin) => "admin",
        _ => "unknown",
    }
}

/// `2026-12-04 16:05:09` (UTC) from milliseconds since the Unix epoch,
/// as `tessera cert list` prints times.
fn utc(unix_ms: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64) {
        Ok(t) => format!(
            "{} {:02}:{:02}:{:02}",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_999), "2000-02-29 00:00:00");
        assert_eq!(utc(u64::MAX), "-");
    }
}
