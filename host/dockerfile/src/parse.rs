//! The Dockerfile parser: lines to instructions, as buildkit's `parser` and
//! `instructions` packages.

use std::time::Duration;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character: `\`, or `` ` `` when set by the `# escape=` directive. Pass it
    /// to [`crate::lex::expand`].
    pub escape: char,
    /// The value of the `# syntax=` directive, if any (berth does not load frontends; it
    /// is kept so a builder can warn about it).
    pub syntax: Option<String>,
    /// Every instruction in order, the `ARG`s before the first `FROM` included.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written, its continuation lines joined with the continuation
    /// removed and the comments between them dropped, like `RUN echo a &&     echo b`
    /// (docker's `Original`, for history and cache keys).
    pub text: String,
    /// What it says.
    pub kind: Kind,
}

/// The form of `RUN`, `CMD` and `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// The rest of the line as written, for the shell (`RUN make all`). Not expanded:
    /// the shell does that.
    Shell(String),
    /// A JSON array of strings (`RUN ["make", "all"]`).
    Exec(Vec<String>),
}

/// An instruction and its arguments. Words are as written (quotes kept, variables not
/// expanded) unless said otherwise: a builder expands them with [`crate::lex`] where
/// docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `FROM [--platform=P] image [AS name]`. `name` is lowercased, as docker does.
    From {
        /// The image reference (or an earlier stage's name), unexpanded.
        image: String,
        /// The stage name after `AS`, lowercased.
        name: Option<String>,
        /// The `--platform` flag, unexpanded.
        platform: Option<String>,
    },
    /// `ARG a b=c`: names with optional default values (raw words).
    Arg(Vec<(String, Option<String>)>),
    /// `ENV k v` (legacy: the rest of the line is the value) or `ENV k=v k2="v 2"`. Keys
    /// and values are raw words: docker expands both.
    Env(Vec<(String, String)>),
    /// `LABEL k=v ...`, parsed as `ENV`; keys may be quoted. Keys and values are raw.
    Label(Vec<(String, String)>),
    /// `RUN`.
    Run(Form),
    /// `CMD`.
    Cmd(Form),
    /// `ENTRYPOINT`.
    Entrypoint(Form),
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(CopyArgs),
    /// `WORKDIR path`: the rest of the line.
    Workdir(String),
    /// `USER user[:group]`: the rest of the line.
    User(String),
    /// `SHELL ["sh", "-c"]`: always the JSON form.
    Shell(Vec<String>),
    /// `EXPOSE 80 443/udp`: the words as written (docker sorts them; order does not
    /// matter to an image).
    Expose(Vec<String>),
    /// `VOLUME /a /b` or `VOLUME ["/a", "/b"]`.
    Volume(Vec<String>),
    /// `STOPSIGNAL SIGTERM`: the rest of the line.
    StopSignal(String),
    /// `HEALTHCHECK [flags] CMD ...`, or `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// `ONBUILD trigger`: the trigger as written, like `RUN echo hi`.
    Onbuild(String),
    /// `MAINTAINER name`: the rest of the line.
    Maintainer(String),
}

/// The arguments of `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// One or more sources, raw words.
    pub sources: Vec<String>,
    /// The destination, a raw word.
    pub dest: String,
    /// `--from` (COPY only): a stage name or index, or an image.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
}

/// A `HEALTHCHECK` other than `NONE`. A duration flag of zero is `None`, as docker
/// treats it as unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["CMD", args...]` for the exec form, `["CMD-SHELL", command]` for the shell form.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// Why a Dockerfile could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct ParseError {
    /// The 1-based line of the instruction (or directive) at fault.
    pub line: usize,
    /// What is wrong, in docker's words where docker has them.
    pub message: String,
}

/// Every instruction docker knows, lowercase.
const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = crate::ignore::lines(text).collect();
    let mut directives = Directives {
        escape: '\\',
        syntax: None,
        seen_escape: false,
        done: false,
    };
    let mut instructions = Vec::new();
    let mut seen_from = false;
    let mut i = 0;
    while i < lines.len() {
        let mut raw = lines[i];
        if i == 0 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        let start = i + 1;
        let trimmed = raw.trim_start();
        directives.check(trimmed).map_err(|message| ParseError {
            line: start,
            message,
        })?;
        i += 1;
        let escape = directives.escape;
        let content = if trimmed.starts_with('#') {
            ""
        } else {
            trimmed
        };
        let (mut line, mut done) = trim_continuation(content, escape);
        if done && line.is_empty() {
            continue;
        }
        while !done && i < lines.len() {
            let raw = lines[i];
            i += 1;
            // Comments and blank lines may sit between continuation lines.
            let trimmed = raw.trim_start();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            let (part, end) = trim_continuation(raw, escape);
            line.push_str(&part);
            done = end;
        }
        let kind = parse_line(&line, escape).map_err(|message| ParseError {
            line: start,
            message,
        })?;
        match kind {
            Kind::From { .. } => seen_from = true,
            Kind::Arg(_) => {}
            _ if !seen_from => {
                return Err(ParseError {
                    line: start,
                    message: "no build stage in current context".into(),
                })
            }
            _ => {}
        }
        instructions.push(Instruction {
            line: start,
            text: line,
            kind,
        });
    }
    if instructions.is_empty() {
        return Err(ParseError {
            line: lines.len().max(1),
            message: "file with no instructions".into(),
        });
    }
    Ok(Dockerfile {
        escape: directives.escape,
        syntax: directives.syntax,
        instructions,
    })
}

/// Parser directives: `# escape=` and `# syntax=`, only before anything else.
struct Directives {
    escape: char,
    syntax: Option<String>,
    seen_escape: bool,
    done: bool,
}

impl Directives {
    /// Looks at a (left-trimmed) line while directives may still come.
    fn check(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        match key.to_ascii_lowercase().as_str() {
            "escape" => {
                if self.seen_escape {
                    return Err("only one escape parser directive can be used".into());
                }
                self.seen_escape = true;
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(format!(
                            "invalid escape token '{value}' does not match ` or \\"
                        ))
                    }
                };
            }
            "syntax" => {
                if self.syntax.is_some() {
                    return Err("only one syntax parser directive can be used".into());
                }
                self.syntax = Some(value.to_string());
            }
            _ => self.done = true,
        }
        Ok(())
    }
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, with Go's ASCII `\s`.
fn directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let rest = rest.trim_start_matches(is_space).strip_prefix('=')?;
    let value = rest.trim_matches(is_space);
    (!value.is_empty()).then_some((key, value))
}

/// Removes a trailing escape (and spaces or tabs after it): `(line, true)` when the
/// line does not continue.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    match body.strip_suffix(escape) {
        Some(body) => (body.to_string(), false),
        None => (line.to_string(), true),
    }
}

/// docker's `reWhitespace`: `[\t\v\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Whitespace-separated words (docker's `parseStringsWhitespaceDelimited`).
fn split_ws(args: &str) -> Vec<String> {
    args.split(is_re_space)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits an instruction into its name, its `--flags` and the trimmed rest.
fn split_command(line: &str) -> (String, Vec<String>, String) {
    let line = line.trim();
    match line.find(is_re_space) {
        None => (line.to_string(), Vec::new(), String::new()),
        Some(at) => {
            let rest = line[at..].trim_start_matches(is_re_space);
            let (args, flags) = extract_flags(rest);
            (line[..at].to_string(), flags, args.trim().to_string())
        }
    }
}

/// docker's `extractBuilderFlags`: leading words that start with `--` (quotes removed,
/// `\` escapes applied), and the rest of the line after them. A lone `--` ends them.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let rest_from = |p: usize| line[chars[p].0..].to_string();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut p = 0;
    while p <= n {
        let ch = chars.get(p).map_or('\0', |&(_, c)| c);
        if phase == Phase::Spaces {
            if p == n {
                break;
            }
            if ch.is_whitespace() {
                p += 1;
                continue;
            }
            if ch != '-' || chars.get(p + 1).map(|&(_, c)| c) != Some('-') {
                return (rest_from(p), words);
            }
            phase = Phase::Word;
        }
        if p == n {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        let mut c = ch;
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_from(p), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                p += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                p += 1;
                continue;
            }
        } else if ch == quote {
            phase = Phase::Word;
            p += 1;
            continue;
        }
        if ch == '\\' {
            if p + 1 == n {
                phase = Phase::Word;
                p += 1;
                continue;
            }
            p += 1;
            c = chars[p].1;
        }
        word.push(c);
        p += 1;
    }
    (String::new(), words)
}

/// docker's `parseWords`: words split at unquoted whitespace, quotes and escapes kept.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut p = 0;
    while p <= n {
        let ch = chars.get(p).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if p == n {
                break;
            }
            if ch.is_whitespace() {
                p += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if p == n {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        let mut c = ch;
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                p += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if p + 1 == n {
                    p += 1;
                    continue;
                }
                word.push(ch);
                p += 1;
                c = chars[p];
            }
        } else {
            if ch == quote {
                phase = Phase::Word;
            }
            if ch == escape && quote != '\'' {
                if p + 1 == n {
                    phase = Phase::Word;
                    p += 1;
                    continue;
                }
                word.push(ch);
                p += 1;
                c = chars[p];
            }
        }
        word.push(c);
        p += 1;
    }
    words
}

/// The JSON form, docker's `parseJSON`: `None` when the text is not a JSON array
/// (then docker uses the other form); an error when it is one of non-strings.
fn parse_json(args: &str) -> Result<Option<Vec<String>>, String> {
    let args = args.trim_start();
    if !args.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(args) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => {
                Err("when using JSON array syntax, arrays must be comprised of strings only".into())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `parseMaybeJSON`: JSON array, else the raw rest of the line.
fn parse_form(args: &str) -> Result<Form, String> {
    Ok(match parse_json(args)? {
        Some(list) => Form::Exec(list),
        None => Form::Shell(args.to_string()),
    })
}

/// `parseMaybeJSONToList`: JSON array, else whitespace-separated words.
fn parse_list(args: &str) -> Result<(Vec<String>, bool), String> {
    Ok(match parse_json(args)? {
        Some(list) => (list, true),
        None => (split_ws(args), false),
    })
}

/// Whether a word opens a heredoc, as docker's `^(\d*)<<(-?)([^<]*)$` with a name.
fn is_heredoc(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.trim_matches(['"', '\'']);
    !name.is_empty() && !rest.contains('<')
}

fn reject_heredocs(instr: &str, words: &[String]) -> Result<(), String> {
    if words.iter().any(|w| is_heredoc(w)) {
        return Err(format!(
            "berth build does not support heredocs (<<EOF) in {instr} yet"
        ));
    }
    Ok(())
}

/// The flags docker knows for each instruction that berth does not support yet.
fn unsupported_flags(instr: &str) -> &'static [&'static str] {
    match instr {
        "RUN" => &["mount", "network", "security", "device"],
        "COPY" => &["link", "parents", "exclude"],
        "ADD" => &["link", "checksum", "keep-git-dir", "exclude", "unpack"],
        _ => &[],
    }
}

/// Flag values by name, after docker's `BFlags.Parse` checks.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(instr: &str, words: &[String], allowed: &[&str]) -> Result<Flags, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for word in words {
            if word == "--" {
                break;
            }
            let Some(arg) = word.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {word}"));
            };
            let (name, value) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg, None),
            };
            if allowed.contains(&name) {
                let Some(value) = value else {
                    return Err(format!("missing a value on flag: {name}"));
                };
                if out.iter().any(|(n, _)| n == name) {
                    return Err(format!("duplicate flag specified: {name}"));
                }
                out.push((name.to_string(), value.to_string()));
            } else if unsupported_flags(instr).contains(&name) {
                return Err(format!("berth build does not support {instr} --{name} yet"));
            } else {
                return Err(format!("unknown flag: --{name}"));
            }
        }
        Ok(Flags(out))
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Parses one joined instruction line.
fn parse_line(line: &str, escape: char) -> Result<Kind, String> {
    let (name, flag_words, args) = split_command(line);
    let lower = name.to_ascii_lowercase();
    if !INSTRUCTIONS.contains(&lower.as_str()) {
        return Err(format!("unknown instruction: {name}"));
    }
    let instr = lower.to_ascii_uppercase();
    let flags = |allowed: &[&str]| Flags::parse(&instr, &flag_words, allowed);
    let at_least_one = || format!("{instr} requires at least one argument");
    let exactly_one = || format!("{instr} requires exactly one argument");
    Ok(match lower.as_str() {
        "from" => {
            let flags = flags(&["platform"])?;
            let words = split_ws(&args);
            let name = match words.len() {
                1 => None,
                3 if words[1].eq_ignore_ascii_case("as") => {
                    let stage = words[2].to_ascii_lowercase();
                    if !valid_stage_name(&stage) {
                        return Err(format!(
                            "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                            words[2]
                        ));
                    }
                    Some(stage)
                }
                _ => return Err("FROM requires either one or three arguments".into()),
            };
            Kind::From {
                image: words[0].clone(),
                name,
                platform: flags.get("platform"),
            }
        }
        "arg" => {
            flags(&[])?;
            let words = parse_words(&args, escape);
            if words.is_empty() {
                return Err(at_least_one());
            }
            let mut out = Vec::new();
            for word in words {
                match word.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((key, value)) => out.push((key.to_string(), Some(value.to_string()))),
                    None => out.push((word, None)),
                }
            }
            Kind::Arg(out)
        }
        "env" | "label" => {
            flags(&[])?;
            let pairs = parse_name_val(&args, &instr, escape)?;
            if pairs.is_empty() {
                return Err(at_least_one());
            }
            if pairs.iter().any(|(k, _)| k.is_empty()) {
                return Err(format!("{instr} names can not be blank"));
            }
            if lower == "env" {
                Kind::Env(pairs)
            } else {
                Kind::Label(pairs)
            }
        }
        "run" | "cmd" | "entrypoint" => {
            let allowed: &[&str] = &[];
            flags(allowed)?;
            if args.is_empty() {
                return Err(at_least_one());
            }
            let form = parse_form(&args)?;
            if let (Form::Shell(_), "run") = (&form, lower.as_str()) {
                reject_heredocs(&instr, &parse_words(&args, escape))?;
            }
            match lower.as_str() {
                "run" => Kind::Run(form),
                "cmd" => Kind::Cmd(form),
                _ => Kind::Entrypoint(form),
            }
        }
        "copy" | "add" => {
            let allowed: &[&str] = if lower == "copy" {
                &["from", "chown", "chmod"]
            } else {
                &["chown", "chmod"]
            };
            let flags = flags(allowed)?;
            let (mut words, json) = parse_list(&args)?;
            if !json {
                reject_heredocs(&instr, &words)?;
            }
            let Some(dest) = words.pop().filter(|_| !words.is_empty()) else {
                return Err(format!(
                    "{instr} requires at least two arguments, but only one was provided. Destination could not be determined"
                ));
            };
            let copy = CopyArgs {
                sources: words,
                dest,
                from: flags.get("from"),
                chown: flags.get("chown"),
                chmod: flags.get("chmod"),
            };
            if lower == "copy" {
                Kind::Copy(copy)
            } else {
                Kind::Add(copy)
            }
        }
        "workdir" | "user" | "stopsignal" | "maintainer" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(exactly_one());
            }
            match lower.as_str() {
                "workdir" => Kind::Workdir(args),
                "user" => Kind::User(args),
                "stopsignal" => Kind::StopSignal(args),
                _ => Kind::Maintainer(args),
            }
        }
        "shell" => {
            flags(&[])?;
            match parse_json(&args)? {
                Some(list) if list.is_empty() => return Err(at_least_one()),
                Some(list) => Kind::Shell(list),
                None if args.is_empty() => return Err(at_least_one()),
                None => return Err("SHELL requires the arguments to be in JSON form".into()),
            }
        }
        "expose" => {
            flags(&[])?;
            let words = split_ws(&args);
            if words.is_empty() {
                return Err(at_least_one());
            }
            Kind::Expose(words)
        }
        "volume" => {
            flags(&[])?;
            let (words, _) = parse_list(&args)?;
            if words.is_empty() {
                return Err(at_least_one());
            }
            let mut out = Vec::new();
            for word in words {
                let word = word.trim();
                if word.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                out.push(word.to_string());
            }
            Kind::Volume(out)
        }
        "healthcheck" => parse_healthcheck(&args, &flag_words)?,
        "onbuild" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(at_least_one());
            }
            let (trigger, _, _) = split_command(&args);
            let upper = trigger.to_ascii_uppercase();
            match upper.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                }
                "MAINTAINER" | "FROM" => {
                    return Err(format!("{upper} isn't allowed as an ONBUILD trigger"))
                }
                _ if !INSTRUCTIONS.contains(&trigger.to_ascii_lowercase().as_str()) => {
                    return Err(format!("unknown instruction: {trigger}"))
                }
                _ => {}
            }
            // docker: the original line less `(?i)^\s*ONBUILD\s*`.
            let text = line.trim_start();
            let text = text.get("onbuild".len()..).unwrap_or_default();
            Kind::Onbuild(text.trim_start().to_string())
        }
        _ => return Err(format!("unknown instruction: {name}")),
    })
}

/// `ENV`/`LABEL` pairs, docker's `parseNameVal`.
fn parse_name_val(args: &str, instr: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(args, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        // Legacy `ENV key the rest of the line`.
        return match args.find(is_re_space) {
            Some(at) => Ok(vec![(
                args[..at].to_string(),
                args[at..].trim_start_matches(is_re_space).to_string(),
            )]),
            None => Err(format!("{instr} must have two arguments")),
        };
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

/// docker's `^[a-z][a-z0-9-_.]*$` (on the lowercased name).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_healthcheck(args: &str, flag_words: &[String]) -> Result<Kind, String> {
    if args.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let (typ, rest) = match args.find(char::is_whitespace) {
        Some(at) => (&args[..at], args[at..].trim_start()),
        None => (args, ""),
    };
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        // docker does not look at the flags of HEALTHCHECK NONE.
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Kind::Healthcheck(None));
    }
    let flags = Flags::parse(
        "HEALTHCHECK",
        flag_words,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    )?;
    if typ != "CMD" {
        return Err(format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"));
    }
    let test = match (rest.is_empty(), parse_json(rest)?) {
        (true, _) => Vec::new(),
        (false, Some(list)) if list.is_empty() => Vec::new(),
        (false, Some(list)) => std::iter::once("CMD".to_string()).chain(list).collect(),
        (false, None) => vec!["CMD-SHELL".to_string(), rest.to_string()],
    };
    if test.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let interval = |name: &str| -> Result<Option<Duration>, String> {
        let Some(value) = flags.get(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match parse_go_duration(&value)? {
            (_, 0) => Ok(None),
            (true, _) => Err(format!("Interval {name:?} cannot be less than 1ms")),
            (false, nanos) if nanos < 1_000_000 => {
                Err(format!("Interval {name:?} cannot be less than 1ms"))
            }
            (false, nanos) => Ok(Some(Duration::from_nanos(nanos))),
        }
    };
    let retries = match flags.get("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => {
            let n: i32 = value
                .parse()
                .map_err(|_| format!("strconv.ParseInt: parsing {value:?}: invalid syntax"))?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            Some(n.unsigned_abs())
        }
    };
    Ok(Kind::Healthcheck(Some(Healthcheck {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })))
}

/// Go's `time.ParseDuration`: `(negative, nanoseconds)`, like `1m30s`, `500ms`, `1.5h`.
fn parse_go_duration(text: &str) -> Result<(bool, u64), String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let mut s = text;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok((negative, 0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int, rest) = s.split_at(int_len);
        s = rest;
        let mut frac = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            frac = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(invalid)?;
        // Fractional digits beyond nanosecond precision do not matter.
        let mut place = scale;
        for digit in frac.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            value += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    Ok((negative, total as u64))
}

#[cfg(test)]
mod tests;
