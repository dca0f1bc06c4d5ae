//! Command-line flags parsed like Go's `spf13/pflag`, which agnhost uses: `--name=value`
//! or `--name value`, booleans as `--name` or `--name=false`, `--` ends the flags, flags
//! and positional arguments may be interleaved, `-h`/`--help` asks for help.

use std::collections::HashMap;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Value,
}

/// A parsing failure, worded as pflag and Go's `strconv` word them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    #[error("pflag: help requested")]
    Help,
    #[error("unknown flag: --{0}")]
    Unknown(String),
    #[error("unknown shorthand flag: '{shorthand}' in -{arg}")]
    UnknownShorthand { shorthand: char, arg: String },
    #[error("flag needs an argument: --{0}")]
    NeedsArgument(String),
    #[error("invalid argument {value:?} for \"--{name}\" flag: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// Parsed flags and the positional arguments around them.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: HashMap<String, String>,
    pub positional: Vec<String>,
}

/// Parses `args` against the flags `spec` declares.
pub(crate) fn parse(args: &[String], spec: &[(&str, Kind)]) -> Result<Flags, Error> {
    let mut flags = Flags::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            flags.positional.extend(args.by_ref().cloned());
        } else if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            if name == "help" {
                return Err(Error::Help);
            }
            let Some(&(_, kind)) = spec.iter().find(|(known, _)| *known == name) else {
                return Err(Error::Unknown(name.to_string()));
            };
            let value = match (kind, inline) {
                (_, Some(value)) => value.to_string(),
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Value, None) => args
                    .next()
                    .cloned()
                    .ok_or_else(|| Error::NeedsArgument(name.to_string()))?,
            };
            flags.values.insert(name.to_string(), value);
        } else if let Some(shorthands) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let shorthand = shorthands.chars().next().unwrap_or('-');
            if shorthand == 'h' {
                return Err(Error::Help);
            }
            return Err(Error::UnknownShorthand {
                shorthand,
                arg: shorthands.to_string(),
            });
        } else {
            flags.positional.push(arg.clone());
        }
    }
    Ok(flags)
}

impl Flags {
    /// The raw value of a flag that was given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub(crate) fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    /// An integer flag, parsed like Go's `strconv.ParseInt(s, 0, 64)` for decimal input.
    pub(crate) fn int(&self, name: &str, default: i64) -> Result<i64, Error> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        value.parse().map_err(|_| Error::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            reason: format!("strconv.ParseInt: parsing {value:?}: invalid syntax"),
        })
    }

    /// A boolean flag, with the spellings Go's `strconv.ParseBool` accepts.
    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool, Error> {
        match self.get(name) {
            None => Ok(default),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(value) => Err(Error::Invalid {
                name: name.to_string(),
                value: value.to_string(),
                reason: format!("strconv.ParseBool: parsing {value:?}: invalid syntax"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[(&str, Kind)] = &[
        ("port", Kind::Value),
        ("tcp", Kind::Bool),
        ("name", Kind::Value),
    ];

    fn parse_strs(args: &[&str]) -> Result<Flags, Error> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse(&args, SPEC)
    }

    #[test]
    fn both_value_forms_bools_and_positionals() {
        let flags = parse_strs(&["a", "--port=80", "b", "--tcp", "--name", "-x"]).unwrap();
        assert_eq!(flags.int("port", 1), Ok(80));
        assert_eq!(flags.bool("tcp", false), Ok(true));
        assert_eq!(flags.string("name", ""), "-x");
        assert_eq!(flags.positional, ["a", "b"]);

        let flags = parse_strs(&["--tcp=false", "--", "--port=1"]).unwrap();
        assert_eq!(flags.bool("tcp", true), Ok(false));
        assert_eq!(flags.int("port", 9376), Ok(9376));
        assert_eq!(flags.positional, ["--port=1"]);
    }

    #[test]
    fn errors_are_worded_like_pflag() {
        let err = |args: &[&str]| parse_strs(args).unwrap_err().to_string();
        assert_eq!(err(&["--nope"]), "unknown flag: --nope");
        assert_eq!(err(&["--port"]), "flag needs an argument: --port");
        assert_eq!(err(&["-port=1"]), "unknown shorthand flag: 'p' in -port=1");
        assert_eq!(parse_strs(&["-h"]).unwrap_err(), Error::Help);
        assert_eq!(parse_strs(&["--help"]).unwrap_err(), Error::Help);

        let flags = parse_strs(&["--port=eighty", "--tcp=yes"]).unwrap();
        assert_eq!(
            flags.int("port", 0).unwrap_err().to_string(),
            "invalid argument \"eighty\" for \"--port\" flag: \
             strconv.ParseInt: parsing \"eighty\": invalid syntax"
        );
        assert_eq!(
            flags.bool("tcp", false).unwrap_err().to_string(),
            "invalid argument \"yes\" for \"--tcp\" flag: \
             strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }
}
