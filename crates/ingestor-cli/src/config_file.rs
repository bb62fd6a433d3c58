//! `ingestor serve --config FILE`: the server's flags in a TOML file.
//!
//! The file is not a second description of the settings: each key names a long flag of
//! `ingestor serve` (or the global `--data-dir`), and before clap parses, the file's keys
//! become flags inserted ahead of the user's own arguments. Clap stays the single source of
//! truth: every flag, present or future, can be set in the file, with the same parser and
//! the same error messages.
//!
//! - `body-limit = "16MiB"` or `body_limit = "16MiB"` becomes `--body-limit=16MiB`;
//!   integers and floats become their text.
//! - A flag without a value (`forward-no-retry-429`) takes `true` (the flag given) or
//!   `false` (not given).
//! - A repeatable flag (`forward`) takes an array, each element a flag, or a table of
//!   `NAME = "URL"` pairs, each becoming `--forward=NAME=URL`.
//! - Flags on the command line win: the file's come first and clap keeps the last value of
//!   a flag given twice (`args_override_self`). A repeatable flag given on the command line
//!   at all replaces the file's list rather than adding to it.
//!
//! Unknown keys, values of the wrong shape (a table for a single value, a datetime), an
//! unreadable file and invalid TOML are refused here, naming the file, the line and the key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use toml::{Spanned, Value};

/// The subcommand that reads `--config`.
const SUBCOMMAND: &str = "serve";
/// The flag naming the file.
const FLAG: &str = "config";

/// The command line with the file's flags inserted, and where those came from.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    /// The arguments to give clap, the program name first.
    pub(crate) argv: Vec<OsString>,
    /// The file's settings that reached `argv`, to explain clap's errors about them.
    origins: Vec<Origin>,
}

/// Where a flag inserted from the file came from.
#[derive(Debug, Clone)]
struct Origin {
    /// The flag's long name, without the dashes.
    long: String,
    /// The key as the file spells it.
    key: String,
    /// The file.
    file: PathBuf,
    /// The key's line in the file, from 1.
    line: usize,
}

impl Expanded {
    /// A note for an error clap raised about an argument that came from the file (and not
    /// also from the command line), naming the file, line and key; `None` otherwise.
    /// Any other error gets a note that the file's flags were read, if there were any.
    pub(crate) fn explain(&self, err: &clap::Error) -> Option<String> {
        let first = self.origins.first()?;
        let from_file = match err.get(clap::error::ContextKind::InvalidArg) {
            Some(clap::error::ContextValue::String(arg)) => arg
                .split([' ', '='])
                .next()
                .and_then(|flag| flag.strip_prefix("--"))
                .and_then(|long| self.origins.iter().find(|o| o.long == long)),
            _ => None,
        };
        Some(match from_file {
            Some(o) => format!(
                "note: --{} comes from {}, line {}, key `{}`",
                o.long,
                o.file.display(),
                o.line,
                o.key
            ),
            None => format!(
                "note: the flags of {} came before the command line's",
                first.file.display()
            ),
        })
    }
}

/// Finds `--config FILE` (or `--config=FILE`) after the `serve` subcommand in `argv` (the
/// program name first), reads the file and inserts its flags: global ones right after the
/// program name, the subcommand's right after `serve`, both before the user's own.
///
/// Without `serve` or without `--config`, `argv` is returned as it is. A `--config` with no
/// value is left for clap to report.
///
/// # Errors
/// The file cannot be read, is not valid TOML, or has a key that is no flag of
/// `ingestor serve` or a value that cannot be one: the message names the file, and the line
/// and key where there is one.
pub(crate) fn expand(cmd: &Command, argv: Vec<OsString>) -> Result<Expanded, String> {
    let Some(at) = subcommand_position(cmd, &argv) else {
        return Ok(Expanded { argv, origins: Vec::new() });
    };
    let Some(file) = config_path(&argv[at + 1..])? else {
        return Ok(Expanded { argv, origins: Vec::new() });
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("--config {}: cannot read it: {e}", file.display()))?;
    let settings = parse(cmd, &text, &file)?;
    let user = &argv[1..];
    let mut global = Vec::new();
    let mut local = Vec::new();
    let mut origins = Vec::new();
    for s in settings {
        // A repeatable flag on the command line replaces the file's list.
        if s.action_appends() && gives(user, &s.long) {
            continue;
        }
        if s.flags.is_empty() {
            continue;
        }
        if !gives(user, &s.long) {
            origins.push(s.origin.clone());
        }
        if s.global { global.extend(s.flags) } else { local.extend(s.flags) }
    }
    let mut out = Vec::with_capacity(argv.len() + global.len() + local.len());
    out.push(argv[0].clone());
    out.extend(global);
    out.extend_from_slice(&argv[1..=at]);
    out.extend(local);
    out.extend_from_slice(&argv[at + 1..]);
    Ok(Expanded { argv: out, origins })
}

/// The index in `argv` of the `serve` subcommand, if it is the one given: the first
/// argument that is neither an option of the top-level command nor an option's value.
fn subcommand_position(cmd: &Command, argv: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].to_str()?;
        if a == "--" {
            return None;
        }
        if let Some(long) = a.strip_prefix("--") {
            let takes_value = cmd
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long))
                .is_some_and(|arg| arg.get_action().takes_values());
            i += if takes_value { 2 } else { 1 };
        } else if a.starts_with('-') && a.len() > 1 {
            i += 1;
        } else {
            return (a == SUBCOMMAND).then_some(i);
        }
    }
    None
}

/// The file named by the last `--config` among the subcommand's arguments.
fn config_path(args: &[OsString]) -> Result<Option<PathBuf>, String> {
    let flag = format!("--{FLAG}");
    let with_value = format!("--{FLAG}=");
    let mut path = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            break;
        }
        if *a == *flag {
            // Without a value, clap says so.
            path = args.get(i + 1).map(PathBuf::from);
            i += 2;
            continue;
        }
        if a.as_encoded_bytes().starts_with(with_value.as_bytes()) {
            let s = a.to_str().ok_or_else(|| {
                format!("{flag}=FILE: the name is not UTF-8; write {flag} FILE instead")
            })?;
            path = Some(PathBuf::from(&s[with_value.len()..]));
        }
        i += 1;
    }
    Ok(path)
}

/// Whether the user's arguments give `--long` (or `--long=...`).
fn gives(user: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    user.iter().take_while(|a| *a != "--").any(|a| {
        let b = a.as_encoded_bytes();
        *a == *flag || (b.starts_with(flag.as_bytes()) && b.get(flag.len()) == Some(&b'='))
    })
}

/// One key of the file, resolved to its flag.
#[derive(Debug)]
struct Setting {
    /// The flag's long name.
    long: String,
    /// Its action (set, append, true when present, ...).
    action: ArgAction,
    /// A flag of the top-level command, given before the subcommand.
    global: bool,
    /// The arguments the value becomes (none for `false`).
    flags: Vec<OsString>,
    /// Where it came from.
    origin: Origin,
}

impl Setting {
    /// Whether the flag adds to a list (or a count) rather than setting one value.
    fn action_appends(&self) -> bool {
        matches!(self.action, ArgAction::Append | ArgAction::Count)
    }
}

/// The flags a file stands for, in the file's order.
fn parse(cmd: &Command, text: &str, file: &Path) -> Result<Vec<Setting>, String> {
    let shown = file.display();
    let table: BTreeMap<Spanned<String>, Spanned<Value>> =
        toml::from_str(text).map_err(|e| format!("--config {shown}: invalid TOML: {e}"))?;
    let serve = cmd
        .find_subcommand(SUBCOMMAND)
        .ok_or_else(|| format!("--config {shown}: the command has no {SUBCOMMAND} subcommand"))?;
    let mut keys: Vec<_> = table.into_iter().collect();
    keys.sort_by_key(|(k, _)| k.span().start);
    let mut settings: Vec<Setting> = Vec::with_capacity(keys.len());
    for (key, value) in keys {
        let line = line_of(text, key.span().start);
        let key = key.into_inner();
        let at = format!("{shown}:{line}: key `{key}`");
        let long = key.replace('_', "-");
        if long == FLAG {
            return Err(format!("{at}: a configuration file cannot name another one"));
        }
        let global = cmd.get_arguments().find(|a| a.is_global_set() && a.get_long() == Some(&long));
        let (arg, is_global) = match global {
            Some(a) => (a, true),
            None => match serve.get_arguments().find(|a| a.get_long() == Some(&long)) {
                Some(a) => (a, false),
                None => {
                    return Err(format!(
                        "{at}: unknown key: `ingestor {SUBCOMMAND}` has no --{long} (keys are \
                         its long flags, without the dashes)"
                    ));
                }
            },
        };
        if let Some(earlier) = settings.iter().find(|s| s.long == long) {
            return Err(format!(
                "{at}: --{long} is already set by `{}` on line {}",
                earlier.origin.key, earlier.origin.line
            ));
        }
        let flags = to_flags(arg, &long, value.into_inner()).map_err(|e| format!("{at}: {e}"))?;
        settings.push(Setting {
            long: long.clone(),
            action: arg.get_action().clone(),
            global: is_global,
            flags,
            origin: Origin { long, key, file: file.to_path_buf(), line },
        });
    }
    Ok(settings)
}

/// The arguments `value` stands for as flag `--long`.
fn to_flags(arg: &Arg, long: &str, value: Value) -> Result<Vec<OsString>, String> {
    let with = |v: String| OsString::from(format!("--{long}={v}"));
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            Value::Boolean(true) => Ok(vec![OsString::from(format!("--{long}"))]),
            Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!(
                "--{long} takes no value: expected true or false, found {}",
                kind(&other)
            )),
        },
        ArgAction::Count => match value {
            Value::Integer(n) if n >= 0 => {
                Ok(std::iter::repeat_n(OsString::from(format!("--{long}")), n as usize).collect())
            }
            Value::Boolean(b) => {
                Ok(if b { vec![OsString::from(format!("--{long}"))] } else { vec![] })
            }
            other => Err(format!("expected a count or a boolean, found {}", kind(&other))),
        },
        ArgAction::Set => match value {
            Value::Array(_) => Err(format!(
                "--{long} takes one value, found an array (only repeatable flags take arrays)"
            )),
            other => Ok(vec![with(scalar(other)?)]),
        },
        ArgAction::Append => match value {
            Value::Array(items) => items.into_iter().map(|v| scalar(v).map(with)).collect(),
            Value::Table(pairs) => pairs
                .into_iter()
                .map(|(name, v)| {
                    scalar(v)
                        .map(|v| with(format!("{name}={v}")))
                        .map_err(|e| format!("`{name}`: {e}"))
                })
                .collect(),
            other => Ok(vec![with(scalar(other)?)]),
        },
        other => Err(format!("--{long} ({other:?}) cannot be set from a file")),
    }
}

/// The text of a single value.
fn scalar(value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, number or boolean, found {}", kind(&other))),
    }
}

/// What a value is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// The line, from 1, of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};
    use ingestor::SyncPolicy;
    use ingestor_server::ServerConfig;

    use super::*;
    use crate::Cli;

    /// A file holding `text`, in a directory that lives as long as the result.
    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingestor.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_owned();
        (dir, path)
    }

    /// `args` with `FILE` replaced by `path`, after the program name.
    fn argv(path: &str, args: &[&str]) -> Vec<OsString> {
        std::iter::once("ingestor")
            .chain(args.iter().copied())
            .map(|a| OsString::from(a.replace("FILE", path)))
            .collect()
    }

    /// The arguments clap gets for a file holding `text` and the command line `args`.
    fn expanded(text: &str, args: &[&str]) -> Result<Vec<String>, String> {
        let (_dir, path) = file(text);
        let e = expand(&Cli::command(), argv(&path, args))?;
        Ok(e.argv.into_iter().map(|a| a.into_string().unwrap().replace(&path, "FILE")).collect())
    }

    /// The error for a file holding `text`, with the file's name replaced by `FILE`.
    fn refused(text: &str) -> String {
        let (_dir, path) = file(text);
        expand(&Cli::command(), argv(&path, &["serve", "--config", "FILE"]))
            .unwrap_err()
            .replace(&path, "FILE")
    }

    /// What `ingestor ARGS` parses to with a file holding `text`.
    fn cli(text: &str, args: &[&str]) -> Result<Cli, String> {
        let (_dir, path) = file(text);
        let e = expand(&Cli::command(), argv(&path, args))?;
        Cli::try_parse_from(e.argv).map_err(|e| e.to_string())
    }

    /// The server configuration `ingestor ARGS` describes with a file holding `text`, and
    /// its data directory.
    fn server(text: &str, args: &[&str]) -> (ServerConfig, PathBuf) {
        let cli = cli(text, args).unwrap();
        let crate::Command::Serve { server, .. } = cli.command else { panic!("not serve") };
        (server.config(&cli.data_dir).unwrap(), cli.data_dir)
    }

    fn destinations(c: &ServerConfig) -> Vec<String> {
        let f = c.forward.as_ref().map(|f| f.config.destinations.clone()).unwrap_or_default();
        f.into_iter().map(|d| format!("{}={}", d.name, d.url)).collect()
    }

    #[test]
    fn scalars_booleans_and_arrays_become_flags_before_the_users() {
        let text = r#"
            http = "127.0.0.1:9000"
            max_connections = 10
            body-limit = "1MiB"
            forward-no-retry-429 = true
            no-final-snapshot = false
            forward = ["vm=http://127.0.0.1:1/api/v1/write", "prom=http://127.0.0.1:2/write"]
            data-dir = "/var/lib/ingestor"
        "#;
        assert_eq!(
            expanded(text, &["serve", "--config", "FILE", "--statsd", "127.0.0.1:8125"]).unwrap(),
            [
                "ingestor",
                "--data-dir=/var/lib/ingestor",
                "serve",
                "--http=127.0.0.1:9000",
                "--max-connections=10",
                "--body-limit=1MiB",
                "--forward-no-retry-429",
                "--forward=vm=http://127.0.0.1:1/api/v1/write",
                "--forward=prom=http://127.0.0.1:2/write",
                "--config",
                "FILE",
                "--statsd",
                "127.0.0.1:8125",
            ]
        );
        assert_eq!(scalar(Value::Float(1.5)).unwrap(), "1.5");
        assert_eq!(scalar(Value::Integer(-3)).unwrap(), "-3");
    }

    #[test]
    fn a_forward_table_is_name_url_pairs() {
        let text = "[forward]\nvm = \"http://127.0.0.1:1/api/v1/write\"\nprom = \"http://127.0.0.1:2/w\"\n";
        let got = expanded(text, &["serve", "--config=FILE"]).unwrap();
        assert!(
            got.contains(&"--forward=vm=http://127.0.0.1:1/api/v1/write".to_owned()),
            "{got:?}"
        );
        assert!(got.contains(&"--forward=prom=http://127.0.0.1:2/w".to_owned()), "{got:?}");
    }

    #[test]
    fn values_of_the_wrong_shape_are_refused_naming_the_key() {
        let e = refused("http = \"127.0.0.1:1\"\n[limits]\nmax-connections = 5\n");
        assert!(e.starts_with("FILE:2: key `limits`: unknown key"), "{e}");
        let e = refused("http = { port = 1 }\n");
        assert_eq!(e, "FILE:1: key `http`: expected a string, number or boolean, found a table");
        let e = refused("\n\nstatsd = 1979-05-27T07:32:00Z\n");
        assert!(e.starts_with("FILE:3: key `statsd`:") && e.contains("a datetime"), "{e}");
        let e = refused("http = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n");
        assert!(e.starts_with("FILE:1: key `http`: --http takes one value, found an array"), "{e}");
        let e = refused("forward-no-retry-429 = \"yes\"\n");
        assert!(
            e.contains("key `forward-no-retry-429`: --forward-no-retry-429 takes no value"),
            "{e}"
        );
        let e = refused("forward = [[\"vm\"]]\n");
        assert!(e.starts_with("FILE:1: key `forward`: expected a string"), "{e}");
        let e = refused("[forward]\nvm = { url = \"x\" }\n");
        assert!(e.starts_with("FILE:1: key `forward`: `vm`: expected a string"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_naming_key_file_and_line() {
        let e = refused("http = \"127.0.0.1:1\"\n\n# limits\nbodylimit = \"1MiB\"\n");
        assert_eq!(
            e,
            "FILE:4: key `bodylimit`: unknown key: `ingestor serve` has no --bodylimit (keys \
             are its long flags, without the dashes)"
        );
        let e = refused("config = \"other.toml\"\n");
        assert!(e.contains("key `config`: a configuration file cannot name another one"), "{e}");
        let e = refused("help = true\n");
        assert!(e.contains("key `help`: unknown key"), "{e}");
        let e = refused("body-limit = \"1MiB\"\nbody_limit = \"2MiB\"\n");
        assert_eq!(
            e,
            "FILE:2: key `body_limit`: --body-limit is already set by `body-limit` on line 1"
        );
    }

    #[test]
    fn unreadable_files_and_invalid_toml_are_refused() {
        let e = refused("http = \n");
        assert!(e.starts_with("--config FILE: invalid TOML:") && e.contains("line 1"), "{e}");
        let cmd = Cli::command();
        let e = expand(&cmd, argv("", &["serve", "--config", "/nonexistent/ingestor.toml"]))
            .unwrap_err();
        assert!(e.starts_with("--config /nonexistent/ingestor.toml: cannot read it:"), "{e}");
    }

    #[test]
    fn only_serve_reads_a_file() {
        let same = |args: &[&str]| {
            let argv = argv("", args);
            assert_eq!(expand(&Cli::command(), argv.clone()).unwrap().argv, argv);
        };
        same(&["serve", "--http", "127.0.0.1:1"]);
        same(&["--data-dir", "serve", "stats", "--config", "/nonexistent"]);
        same(&["ingest", "--config", "/nonexistent", "serve"]);
        same(&["serve", "--", "--config", "/nonexistent"]);
        // A --config without a value is clap's to report.
        same(&["serve", "--config"]);
        let e = Cli::try_parse_from(argv("", &["serve", "--config"])).unwrap_err();
        assert!(e.to_string().contains("--config <FILE>"), "{e}");
        // Global flags before the subcommand are skipped, values and all.
        let (_dir, path) = file("http = \"127.0.0.1:1\"\n");
        let e =
            expand(&Cli::command(), argv(&path, &["--data-dir", "d", "serve", "--config", "FILE"]))
                .unwrap();
        assert_eq!(e.argv[4], "--http=127.0.0.1:1");
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let text = "http = \"127.0.0.1:9000\"\nbody-limit = \"1MiB\"\ndata-dir = \"from-file\"\n";
        let (c, dir) = server(text, &["serve", "--config", "FILE"]);
        assert_eq!(c.http, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert_eq!(dir, Path::new("from-file"));
        // Flags the file does not name keep their defaults.
        assert_eq!(c.limits.max_decoded_body_bytes, 64 << 20);
        assert_eq!(c.statsd, None);
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let text = "http = \"127.0.0.1:9000\"\nbody-limit = \"1MiB\"\ndata-dir = \"from-file\"\n";
        let (c, dir) = server(
            text,
            &["serve", "--config", "FILE", "--body-limit", "2MiB", "--http=127.0.0.1:9001"],
        );
        assert_eq!(c.http, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(c.limits.max_body_bytes, 2 << 20);
        assert_eq!(dir, Path::new("from-file"));
        // The global --data-dir, before or after the subcommand.
        let (_, dir) = server(text, &["--data-dir", "cli", "serve", "--config", "FILE"]);
        assert_eq!(dir, Path::new("cli"));
        let (_, dir) = server(text, &["serve", "--config", "FILE", "--data-dir=cli"]);
        assert_eq!(dir, Path::new("cli"));
        // --config before the flags it is overridden by, or after them: the same.
        let (c, _) = server(text, &["serve", "--body-limit", "2MiB", "--config", "FILE"]);
        assert_eq!(c.limits.max_body_bytes, 2 << 20);
        // A true boolean on the command line, false in the file.
        let (c, _) = server(
            "forward = [\"vm=http://127.0.0.1:1/w\"]\nforward-no-retry-429 = false\n",
            &["serve", "--config", "FILE", "--forward-no-retry-429"],
        );
        assert!(!c.forward.unwrap().config.retry_429);
    }

    #[test]
    fn a_forward_on_the_command_line_replaces_the_files_list() {
        let text = "forward = [\"vm=http://127.0.0.1:1/w\", \"prom=http://127.0.0.1:2/w\"]\n";
        let (c, _) = server(text, &["serve", "--config", "FILE"]);
        assert_eq!(destinations(&c), ["vm=http://127.0.0.1:1/w", "prom=http://127.0.0.1:2/w"]);
        let (c, _) =
            server(text, &["serve", "--config", "FILE", "--forward", "x=http://127.0.0.1:3/w"]);
        assert_eq!(destinations(&c), ["x=http://127.0.0.1:3/w"]);
        let (c, _) =
            server(text, &["serve", "--forward=x=http://127.0.0.1:3/w", "--config", "FILE"]);
        assert_eq!(destinations(&c), ["x=http://127.0.0.1:3/w"]);
        // The table form too.
        let text = "[forward]\nvm = \"http://127.0.0.1:1/w\"\n";
        let (c, _) = server(text, &["serve", "--config", "FILE"]);
        assert_eq!(destinations(&c), ["vm=http://127.0.0.1:1/w"]);
    }

    #[test]
    fn a_whole_file_reaches_the_server_and_engine_configs() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("write-tokens");
        std::fs::write(&tokens, "secret\n").unwrap();
        let text = format!(
            r#"
            http = "127.0.0.1:9000"
            statsd = "127.0.0.1:8125"
            max-connections = 100
            header-timeout = "5s"
            decoded-body-limit = "32MiB"
            write-token-file = "{}"
            forward-interval = "1s"
            forward-budget-policy = "drop_oldest"
            forward-no-retry-429 = true
            sync = "always"
            snapshot-keep = 3

            [forward]
            vm = "http://127.0.0.1:1/api/v1/write"
            prom = "http://127.0.0.1:2/api/v1/write"
            "#,
            tokens.display()
        );
        let cli = cli(&text, &["serve", "--config", "FILE", "--max-connections", "200"]).unwrap();
        let crate::Command::Serve { server, engine } = cli.command else { panic!("not serve") };
        let c = server.config(&cli.data_dir).unwrap();
        assert_eq!(c.http, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.statsd, Some("127.0.0.1:8125".parse().unwrap()));
        assert_eq!(c.limits.max_connections, 200);
        assert_eq!(c.limits.header_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.max_decoded_body_bytes, 32 << 20);
        assert!(c.auth.write.is_some());
        assert!(c.auth.read.is_none());
        let f = c.forward.as_ref().unwrap();
        assert_eq!(f.config.flush_interval, Duration::from_secs(1));
        assert_eq!(f.config.budget_policy, ingestor_forward::BudgetPolicy::DropOldest);
        assert!(!f.config.retry_429);
        assert_eq!(f.dir, Path::new("./ingestor-data/outbox"));
        let mut names = destinations(&c);
        names.sort();
        assert_eq!(
            names,
            ["prom=http://127.0.0.1:2/api/v1/write", "vm=http://127.0.0.1:1/api/v1/write"]
        );
        let e = engine.config();
        assert_eq!(e.sync_policy, SyncPolicy::Always);
        assert_eq!(e.snapshot.keep, 3);
    }

    #[test]
    fn clap_errors_about_file_values_name_the_key() {
        let (_dir, path) = file("http = \"127.0.0.1:1\"\n\nbody_limit = \"1 MiB\"\n");
        let e = expand(&Cli::command(), argv(&path, &["serve", "--config", "FILE"])).unwrap();
        let err = Cli::try_parse_from(&e.argv).unwrap_err();
        assert_eq!(
            e.explain(&err).unwrap(),
            format!("note: --body-limit comes from {path}, line 3, key `body_limit`")
        );
        // Given on the command line too, the value in error is the user's.
        let e = expand(
            &Cli::command(),
            argv(&path, &["serve", "--config", "FILE", "--body-limit", "x"]),
        )
        .unwrap();
        let err = Cli::try_parse_from(&e.argv).unwrap_err();
        assert_eq!(
            e.explain(&err).unwrap(),
            format!("note: the flags of {path} came before the command line's")
        );
    }
}
