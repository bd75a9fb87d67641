//! Variable substitution and word splitting, as docker's shell lexer (buildkit's
//! `frontend/dockerfile/shell/lex.go`, `ProcessWord` and `ProcessWords`).
//!
//! Single quotes are literal; double quotes keep everything but `$` expansions and the
//! escapes `\"`, `\$` and `\\` (with the Dockerfile's escape character); outside quotes
//! the escape character makes the next character literal. `$VAR`, `${VAR}`,
//! `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`,
//! `${VAR?msg}`, the pattern trims `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`,
//! `${VAR%%pat}` and the replacements `${VAR/pat/repl}`, `${VAR//pat/repl}` are
//! supported; an unset variable expands to the empty string. Anything else inside `${}`
//! is a [`LexError`], never a guessed value.

/// How deep `${a:-${b:-...}}` may nest before the lexer gives up (the input is user
/// text, and each level is a frame on the stack).
const MAX_DEPTH: usize = 128;

/// Why a word could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// failed to process {word:?}: unexpected end of statement while looking for matching {expected}
    #[error(
        "failed to process {word:?}: unexpected end of statement while looking for matching {expected}"
    )]
    Unterminated {
        /// The word as given.
        word: String,
        /// What was still open: `single-quote`, `double-quote` or a character.
        expected: String,
    },
    /// failed to process {word:?}: syntax error: missing '}'
    #[error("failed to process {word:?}: syntax error: missing '}}'")]
    MissingBrace {
        /// The word as given.
        word: String,
    },
    /// failed to process {word:?}: syntax error: missing '/' in ${{}}
    #[error("failed to process {word:?}: syntax error: missing '/' in ${{}}")]
    MissingSlash {
        /// The word as given.
        word: String,
    },
    /// failed to process {word:?}: syntax error: bad substitution
    #[error("failed to process {word:?}: syntax error: bad substitution")]
    BadSubstitution {
        /// The word as given.
        word: String,
    },
    /// failed to process {word:?}: unsupported modifier ({modifier}) in substitution
    #[error("failed to process {word:?}: unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The word as given.
        word: String,
        /// The modifier, like `:=`.
        modifier: String,
    },
    /// failed to process {word:?}: {name}: {message}
    #[error("failed to process {word:?}: {name}: {message}")]
    Required {
        /// The word as given.
        word: String,
        /// The variable that `${VAR?msg}` or `${VAR:?msg}` required.
        name: String,
        /// The message given after `?`, or docker's default.
        message: String,
    },
    /// failed to process {word:?}: invalid pattern ({pattern}) in substitution: {why}
    #[error("failed to process {word:?}: invalid pattern ({pattern}) in substitution: {why}")]
    InvalidPattern {
        /// The word as given.
        word: String,
        /// The pattern of `#`, `%` or `/`.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// failed to process {word:?}: substitutions nested too deeply
    #[error("failed to process {word:?}: substitutions nested too deeply")]
    TooDeep {
        /// The word as given.
        word: String,
    },
}

/// A [`LexError`] before the word it happened in is known.
enum Fail {
    Unterminated(String),
    MissingBrace,
    MissingSlash,
    BadSubstitution,
    Unsupported(String),
    Required(String, String),
    InvalidPattern(String, String),
    TooDeep,
}

impl Fail {
    fn in_word(self, word: &str) -> LexError {
        let word = word.to_string();
        match self {
            Fail::Unterminated(expected) => LexError::Unterminated { word, expected },
            Fail::MissingBrace => LexError::MissingBrace { word },
            Fail::MissingSlash => LexError::MissingSlash { word },
            Fail::BadSubstitution => LexError::BadSubstitution { word },
            Fail::Unsupported(modifier) => LexError::UnsupportedModifier { word, modifier },
            Fail::Required(name, message) => LexError::Required {
                word,
                name,
                message,
            },
            Fail::InvalidPattern(pattern, why) => LexError::InvalidPattern { word, pattern, why },
            Fail::TooDeep => LexError::TooDeep { word },
        }
    }
}

/// Expands `word` as docker's `ProcessWord`: quotes removed, escapes applied, variables
/// substituted from `env` (`None` is unset). Whitespace between words is kept.
pub fn expand(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, LexError> {
    let mut lexer = Lexer::new(word, env, escape);
    lexer
        .process_stop_on(None, false)
        .map(|(result, _)| result)
        .map_err(|fail| fail.in_word(word))
}

/// Expands `text` and splits it into words, as docker's `ProcessWords`: words end at
/// unquoted whitespace, including whitespace that an unquoted `$VAR` expanded to;
/// quoted text never splits. An empty quoted word (`""`) on its own yields no word, as
/// in docker.
pub fn expand_words(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, LexError> {
    let mut lexer = Lexer::new(text, env, escape);
    lexer
        .process_stop_on(None, false)
        .map(|(_, words)| words)
        .map_err(|fail| fail.in_word(text))
}

/// Words as docker's `wordsStruct` collects them.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Fn(&str) -> Option<String>,
    raw_escapes: bool,
    depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, env: &'a dyn Fn(&str) -> Option<String>, escape: char) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            env,
            raw_escapes: false,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to `stop` (consumed) or the end of the text when `stop` is `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        if self.depth >= MAX_DEPTH {
            return Err(Fail::TooDeep);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.stop_on(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    fn stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' => {
                    let value = self.single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' => {
                    let value = self.double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(Fail::Unterminated(stop.to_string())),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, Fail> {
        self.next();
        let mut result = String::new();
        loop {
            match self.next() {
                None => return Err(Fail::Unterminated("single-quote".into())),
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, Fail> {
        self.next();
        let mut result = String::new();
        loop {
            match self.peek() {
                None => return Err(Fail::Unterminated("double-quote".into())),
                Some('"') => {
                    self.next();
                    return Ok(result);
                }
                Some('$') => result.push_str(&self.process_dollar()?),
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                ch = next;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(Fail::MissingBrace),
            Some('{' | '}' | ':') => return Err(Fail::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            None => Err(Fail::MissingBrace),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(first @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let mut modifier = first.to_string();
                let mut op = first;
                let null_is_unset = first == ':';
                if null_is_unset {
                    let Some(second) = self.next() else {
                        return Err(Fail::MissingBrace);
                    };
                    op = second;
                    modifier.push(second);
                }
                let raw = op == '#' || op == '%';
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((word, _)) => word,
                    Err(Fail::TooDeep) => return Err(Fail::TooDeep),
                    Err(_) if self.peek().is_none() => return Err(Fail::MissingBrace),
                    Err(fail) => return Err(fail),
                };
                let value = self.lookup(&name);
                let set = value.is_some();
                let value = value.unwrap_or_default();
                let empty = !set || (null_is_unset && value.is_empty());
                match op {
                    '-' => Ok(if empty { word } else { value }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => {
                        if empty {
                            let message = if !word.is_empty() {
                                word
                            } else if !set {
                                "is not allowed to be unset".into()
                            } else {
                                "is not allowed to be empty".into()
                            };
                            return Err(Fail::Required(name, message));
                        }
                        Ok(value)
                    }
                    '#' | '%' => {
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let glob = Glob::compile(&pattern)
                            .map_err(|why| Fail::InvalidPattern(pattern.clone(), why))?;
                        let chars: Vec<char> = value.chars().collect();
                        Ok(if op == '#' {
                            glob.trim_prefix(&chars, greedy)
                        } else {
                            glob.trim_suffix(&chars, greedy)
                        })
                    }
                    _ => Err(Fail::Unsupported(modifier)),
                }
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((pattern, _)) => pattern,
                    Err(Fail::TooDeep) => return Err(Fail::TooDeep),
                    Err(_) if self.peek().is_none() => return Err(Fail::MissingSlash),
                    Err(fail) => return Err(fail),
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((replacement, _)) => replacement,
                    Err(Fail::TooDeep) => return Err(Fail::TooDeep),
                    Err(_) if self.peek().is_none() => return Err(Fail::MissingBrace),
                    Err(fail) => return Err(fail),
                };
                let value = self.lookup(&name).unwrap_or_default();
                let glob = Glob::compile(&pattern)
                    .map_err(|why| Fail::InvalidPattern(pattern.clone(), why))?;
                let chars: Vec<char> = value.chars().collect();
                Ok(glob.replace(&chars, &replacement, all))
            }
            Some(other) => Err(Fail::Unsupported(other.to_string())),
        }
    }

    /// A name: letters, digits and `_`; or a run of digits; or one special parameter.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(digit) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(digit);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

/// A shell pattern of `${VAR#pat}` and friends: `*` any run, `?` one character (neither
/// crosses a newline, as in docker's regexp translation), `\*`, `\?`, `\\` literal.
struct Glob(Vec<GlobTok>);

#[derive(Clone, Copy)]
enum GlobTok {
    Lit(char),
    One,
    Any,
}

impl Glob {
    fn compile(pattern: &str) -> Result<Glob, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' => toks.push(GlobTok::Any),
                '?' => toks.push(GlobTok::One),
                '\\' => match chars.get(i) {
                    // `\}` and `\/` are escapes of the `${}` syntax, not of the pattern.
                    Some('}' | '/') => {}
                    Some(&next @ ('*' | '?' | '\\')) => {
                        toks.push(GlobTok::Lit(next));
                        i += 1;
                    }
                    Some(next) => return Err(format!("invalid escape '\\{next}'")),
                    None => return Err("invalid escape '\\' at the end".into()),
                },
                _ => toks.push(GlobTok::Lit(ch)),
            }
        }
        Ok(Glob(toks))
    }

    /// For each `k`, whether the pattern matches `s[..k]` exactly (tokens run forward
    /// over `s`, or backward over both when `reverse`).
    fn prefix_matches(&self, s: &[char], reverse: bool) -> Vec<bool> {
        let toks: Vec<GlobTok> = if reverse {
            self.0.iter().rev().copied().collect()
        } else {
            self.0.clone()
        };
        let m = toks.len();
        let closure = |set: &mut Vec<bool>| {
            for i in 0..m {
                if set[i] && matches!(toks[i], GlobTok::Any) {
                    set[i + 1] = true;
                }
            }
        };
        let mut set = vec![false; m + 1];
        set[0] = true;
        closure(&mut set);
        let mut out = Vec::with_capacity(s.len() + 1);
        out.push(set[m]);
        for k in 0..s.len() {
            let c = if reverse { s[s.len() - 1 - k] } else { s[k] };
            let mut next = vec![false; m + 1];
            for i in 0..m {
                if !set[i] {
                    continue;
                }
                match toks[i] {
                    GlobTok::Lit(l) if l == c => next[i + 1] = true,
                    GlobTok::One if c != '\n' => next[i + 1] = true,
                    GlobTok::Any if c != '\n' => next[i] = true,
                    _ => {}
                }
            }
            closure(&mut next);
            out.push(next[m]);
            if !next.iter().any(|&b| b) {
                out.resize(s.len() + 1, false);
                break;
            }
            set = next;
        }
        out
    }

    fn trim_prefix(&self, value: &[char], greedy: bool) -> String {
        let ok = self.prefix_matches(value, false);
        let found = if greedy {
            (0..ok.len()).rev().find(|&k| ok[k])
        } else {
            (0..ok.len()).find(|&k| ok[k])
        };
        match found {
            Some(k) => value[k..].iter().collect(),
            None => value.iter().collect(),
        }
    }

    fn trim_suffix(&self, value: &[char], greedy: bool) -> String {
        let ok = self.prefix_matches(value, true);
        let found = if greedy {
            (0..ok.len()).rev().find(|&k| ok[k])
        } else {
            (0..ok.len()).find(|&k| ok[k])
        };
        match found {
            Some(k) => value[..value.len() - k].iter().collect(),
            None => value.iter().collect(),
        }
    }

    /// The leftmost match at or after `from`, longest at its start: `(start, end)`.
    fn find(&self, value: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=value.len()).find_map(|start| {
            let ok = self.prefix_matches(&value[start..], false);
            (0..ok.len())
                .rev()
                .find(|&k| ok[k])
                .map(|k| (start, start + k))
        })
    }

    /// `${VAR/pat/repl}` (first match) and `${VAR//pat/repl}` (every match, as Go's
    /// `ReplaceAllString` walks them).
    fn replace(&self, value: &[char], replacement: &str, all: bool) -> String {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= value.len() {
            let Some((start, end)) = self.find(value, search) else {
                break;
            };
            out.extend(&value[last_end..start]);
            if end > last_end || start == 0 {
                out.push_str(replacement);
            }
            last_end = end;
            if !all {
                break;
            }
            search = end.max(search + 1);
        }
        out.extend(&value[last_end.min(value.len())..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD" => Some("/home".into()),
            "SHELL" => Some("bash".into()),
            "KOREAN" => Some("한국어".into()),
            "EMPTY" => Some(String::new()),
            "SPACE" => Some("abc  def".into()),
            "FILE" => Some("dir/sub/file.tar.gz".into()),
            _ => None,
        }
    }

    /// Cases from docker's `envVarTest` (moby `builder/dockerfile/shell/envVarTest`,
    /// the same table buildkit's lexer is tested with), Unix column.
    const ENV_VAR_TEST: &str = r#"
hello                    |     hello
he'll'o                  |     hello
he'llo                   |     error
he\'llo                  |     he'llo
he\\'llo                 |     error
abc\tdef                 |     abctdef
"abc\tdef"               |     abc\tdef
"abc\\tdef"              |     abc\tdef
'abc\tdef'               |     abc\tdef
hello\                   |     hello
hello\\                  |     hello\
"hello                   |     error
"hello\"                 |     error
"hel'lo"                 |     hel'lo
'hello                   |     error
'hello\'                 |     hello\
'hello\there'            |     hello\there
'hello\\there'           |     hello\\there
"''"                     |     ''
$.                       |     $.
$1                       |
he$1x                    |     hex
he$.x                    |     he$.x
he$pwd.                  |     he.
he$PWD                   |     he/home
he\$PWD                  |     he$PWD
he\\$PWD                 |     he\/home
"he\$PWD"                |     he$PWD
"he\\$PWD"               |     he\/home
\${}                     |     ${}
\${}aaa                  |     ${}aaa
he\${}                   |     he${}
he\${}xx                 |     he${}xx
${}                      |     error
${}aaa                   |     error
he${}                    |     error
he${}xx                  |     error
he${hi}                  |     he
he${hi}xx                |     hexx
he${PWD}                 |     he/home
he${.}                   |     error
he${XXX:-000}xx          |     he000xx
he${PWD:-000}xx          |     he/homexx
he${XXX:-$PWD}xx         |     he/homexx
he${XXX:-${PWD:-yyy}}xx  |     he/homexx
he${XXX:-${YYY:-yyy}}xx  |     heyyyxx
he${XXX:YYY}             |     error
he${XXX:+${PWD}}xx       |     hexx
he${PWD:+${XXX}}xx       |     hexx
he${PWD:+${SHELL}}xx     |     hebashxx
he${XXX:+000}xx          |     hexx
he${PWD:+000}xx          |     he000xx
'he${XX}'                |     he${XX}
"he${PWD}"               |     he/home
"he'$PWD'"               |     he'/home'
"$PWD"                   |     /home
'$PWD'                   |     $PWD
'\$PWD'                  |     \$PWD
'"hello"'                |     "hello"
he\$PWD                  |     he$PWD
"he\$PWD"                |     he$PWD
'he\$PWD'                |     he\$PWD
he${PWD                  |     error
he${PWD:=000}xx          |     error
he${PWD:+${PWD}:}xx      |     he/home:xx
he${XXX:-\$PWD:}xx       |     he$PWD:xx
he${XXX:-\${PWD}z}xx     |     he${PWDz}xx
안녕하세요                 |     안녕하세요
안'녕'하세요               |     안녕하세요
안'녕하세요                |     error
안녕\'하세요               |     안녕'하세요
안\\'녕하세요              |     error
안녕\t하세요               |     안녕t하세요
"안녕\t하세요"             |     안녕\t하세요
'안녕\t하세요              |     error
안녕하세요\                |     안녕하세요
안녕하세요\\               |     안녕하세요\
"안녕하세요                |     error
"안녕'하세요"              |     안녕'하세요
안녕$1x                    |     안녕x
안녕${PWD:+${SHELL}}xx     |     안녕bashxx
$KOREAN                    |     한국어
안녕$KOREAN                |     안녕한국어
${{aaa}                   |     error
${aaa}}                   |     }
${aaa                     |     error
${{aaa:-bbb}              |     error
${aaa:-bbb}}              |     bbb}
${aaa:-bbb                |     error
${aaa:-bbb}               |     bbb
${aaa:-${bbb:-ccc}}       |     ccc
${aaa:-bbb ${foo}         |     error
${aaa:-bbb {foo}          |     bbb {foo
${:}                      |     error
${:-bbb}                  |     error
${:+bbb}                  |     error
"#;

    #[test]
    fn env_var_test_table() {
        let mut count = 0;
        for line in ENV_VAR_TEST.lines().filter(|l| !l.trim().is_empty()) {
            let (input, expected) = line.split_once('|').unwrap();
            let (input, expected) = (input.trim(), expected.trim());
            let got = expand(input, &env, '\\');
            if expected == "error" {
                assert!(got.is_err(), "{input:?} should fail, got {got:?}");
            } else {
                assert_eq!(got.as_deref(), Ok(expected), "{input:?}");
            }
            count += 1;
        }
        assert!(count >= 90);
    }

    #[test]
    fn empty_and_unset_modifiers() {
        let cases = [
            ("${EMPTY:-x}", "x"),
            ("${EMPTY-x}", ""),
            ("${UNSET-x}", "x"),
            ("${EMPTY:+x}", ""),
            ("${EMPTY+x}", "x"),
            ("${UNSET+x}", ""),
            ("${EMPTY?x}", ""),
            ("${PWD:?x}", "/home"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env, '\\').as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn required_errors_carry_the_message() {
        let err = expand("${UNSET?need it}", &env, '\\').unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${UNSET?need it}\": UNSET: need it"
        );
        let err = expand("${UNSET:?}", &env, '\\').unwrap_err();
        assert!(err
            .to_string()
            .ends_with("UNSET: is not allowed to be unset"));
        let err = expand("${EMPTY:?}", &env, '\\').unwrap_err();
        assert!(err
            .to_string()
            .ends_with("EMPTY: is not allowed to be empty"));
        assert!(matches!(
            expand("${PWD:=x}", &env, '\\'),
            Err(LexError::UnsupportedModifier { modifier, .. }) if modifier == ":="
        ));
    }

    #[test]
    fn pattern_trims_and_replacements() {
        let cases = [
            ("${FILE#*/}", "sub/file.tar.gz"),
            ("${FILE##*/}", "file.tar.gz"),
            ("${FILE%.*}", "dir/sub/file.tar"),
            ("${FILE%%.*}", "dir/sub/file"),
            ("${FILE#nomatch}", "dir/sub/file.tar.gz"),
            ("${FILE/sub/SUB}", "dir/SUB/file.tar.gz"),
            ("${FILE//./_}", "dir/sub/file_tar_gz"),
            ("${FILE/\\//:}", "dir:sub/file.tar.gz"),
            ("${FILE#d?r}", "/sub/file.tar.gz"),
            ("${UNSET#x}", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env, '\\').as_deref(), Ok(want), "{input}");
        }
        assert!(matches!(
            expand("${FILE#\\x}", &env, '\\'),
            Err(LexError::InvalidPattern { .. })
        ));
        assert!(matches!(
            expand("${FILE/x", &env, '\\'),
            Err(LexError::MissingSlash { .. })
        ));
    }

    #[test]
    fn words_split_after_expansion() {
        let words = |s: &str| expand_words(s, &env, '\\').unwrap();
        assert_eq!(words("hello"), ["hello"]);
        assert_eq!(words("  a   b  "), ["a", "b"]);
        assert_eq!(words("hello${hi}bye"), ["hellobye"]);
        assert_eq!(words("hello${SPACE}bye"), ["helloabc", "defbye"]);
        assert_eq!(words("hello\"${SPACE}\"bye"), ["helloabc  defbye"]);
        assert_eq!(words("hello \"${SPACE}\"bye"), ["hello", "abc  defbye"]);
        assert_eq!(words("'a b' c\\ d"), ["a b", "c d"]);
        assert_eq!(words("a \"\" b"), ["a", "b"]);
        assert!(words("").is_empty());
        assert!(expand_words("'open", &env, '\\').is_err());
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(
            expand("c:\\dir`$PWD", &env, '`').as_deref(),
            Ok("c:\\dir$PWD")
        );
        assert_eq!(expand("\"a`\"b\"", &env, '`').as_deref(), Ok("a\"b"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let word = "${a:-".repeat(10_000);
        assert!(expand(&word, &env, '\\').is_err());
        let word = format!("{}x{}", "${a:-".repeat(50), "}".repeat(50));
        assert_eq!(expand(&word, &env, '\\').as_deref(), Ok("x"));
    }
}
