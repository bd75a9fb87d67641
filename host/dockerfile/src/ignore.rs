//! `.dockerignore`, as docker reads it (moby/patternmatcher's `ignorefile.ReadAll`) and
//! matches it (`PatternMatcher.MatchesOrParentMatches`).
//!
//! One pattern a line; a line starting with `#` is a comment; blank lines are skipped;
//! each pattern is trimmed, cleaned like Go's `filepath.Clean` (`./a` is `a`, `a/../b` is
//! `b`) and loses a leading `/`. `!` makes an exception. `*` is any run of characters
//! but `/`, `?` one character but `/`, `[a-z]` and `[^a-z]` classes, `\` escapes the next
//! character, and `**` any number of directories. The last pattern that matches a path
//! decides; a path is also matched when one of its parent directories matches, so `dir`
//! excludes everything under `dir`.
//!
//! Docker's client excludes the Dockerfile and `.dockerignore` from the context when
//! they are listed, though it still reads them; [`Ignore`] does nothing special for
//! them either: it only answers for patterns.

use std::path::Path;

/// Why a `.dockerignore` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// .dockerignore line {line}: illegal exclusion pattern: "!"
    #[error(".dockerignore line {line}: illegal exclusion pattern: \"!\"")]
    BareExclusion {
        /// The 1-based line of the pattern.
        line: usize,
    },
    /// .dockerignore line {line}: syntax error in pattern {pattern:?}
    #[error(".dockerignore line {line}: syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The 1-based line of the pattern.
        line: usize,
        /// The pattern as cleaned.
        pattern: String,
    },
}

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    exceptions: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    kind: MatchKind,
    tokens: Vec<Tok>,
    exclusion: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

#[derive(Debug, Clone)]
enum Tok {
    Lit(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters but `/`.
    Star,
    /// `**` before more pattern: nothing, or anything ending in `/`.
    AnyDirs,
    /// `**` at the end (after other wildcards): anything.
    AnyAll,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut ignore = Ignore::default();
        for (index, line) in lines(text).enumerate() {
            let number = index + 1;
            let line = if index == 0 {
                line.strip_prefix('\u{feff}').unwrap_or(line)
            } else {
                line
            };
            // ignorefile.ReadAll: comments before trimming, then normalise.
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim();
            }
            let mut pattern = pattern.to_string();
            if !pattern.is_empty() {
                pattern = clean(&pattern);
                if pattern.len() > 1 && pattern.starts_with('/') {
                    pattern.remove(0);
                }
            }
            if invert {
                pattern.insert(0, '!');
            }
            // patternmatcher.New: trim and clean again, then the exclusion mark.
            let mut pattern = clean(pattern.trim());
            let exclusion = pattern.starts_with('!');
            if exclusion {
                if pattern.len() == 1 {
                    return Err(IgnoreError::BareExclusion { line: number });
                }
                pattern.remove(0);
                ignore.exceptions = true;
            }
            let compiled = compile(&pattern).ok_or_else(|| IgnoreError::BadPattern {
                line: number,
                pattern: pattern.clone(),
            })?;
            ignore.patterns.push(Pattern {
                kind: compiled.0,
                tokens: compiled.1,
                cleaned: pattern,
                exclusion,
            });
        }
        Ok(ignore)
    }

    /// Whether `rel_path` (relative to the context root, with `/`) is excluded: the last
    /// pattern that matches it or one of its parent directories decides. The path is
    /// cleaned first; the root itself (`.` or the empty path) is never excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let mut file = clean(rel_path);
        while let Some(rest) = file.strip_prefix('/') {
            file = rest.to_string();
        }
        if file.is_empty() || file == "." {
            return false;
        }
        let parent = match file.rfind('/') {
            Some(i) => clean(&file[..=i]),
            None => ".".to_string(),
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&file);
            if !hit && parent != "." {
                hit = (1..=parent_dirs.len()).any(|n| pattern.matches(&parent_dirs[..n].join("/")));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether any `!` pattern exists: a walker must then look inside excluded
    /// directories, since an exception may bring back something in them.
    pub fn has_exceptions(&self) -> bool {
        self.exceptions
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            MatchKind::Exact => path == self.cleaned,
            MatchKind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchKind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            MatchKind::Glob => glob_match(&self.tokens, path),
        }
    }
}

/// Whether `path` (relative, `/`-separated) matches `pattern` as a `.dockerignore` line
/// would (`*` and `?` within one name, `[...]` classes, `**` across names), for the
/// wildcard sources of `COPY` and `ADD`. A malformed pattern matches nothing.
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    let cleaned = clean(pattern.trim_start_matches('/'));
    match compile(&cleaned) {
        Some((kind, tokens)) => Pattern {
            cleaned,
            kind,
            tokens,
            exclusion: false,
        }
        .matches(path),
        None => false,
    }
}

/// Lines as Go's `bufio.ScanLines` gives them: split at `\n`, one trailing `\r` dropped,
/// no empty last line after a final newline.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let empty = text.is_empty();
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(move |_| !empty)
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// A bracket class after its `[`, as Go's `filepath.Match` reads it. `None` when it is
/// malformed.
fn parse_class(chars: &[char], pos: &mut usize) -> Option<Tok> {
    let mut negated = false;
    if chars.get(*pos) == Some(&'^') {
        negated = true;
        *pos += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(*pos) == Some(&']') && !ranges.is_empty() {
            *pos += 1;
            return Some(Tok::Class { negated, ranges });
        }
        let lo = class_char(chars, pos)?;
        let mut hi = lo;
        if chars.get(*pos) == Some(&'-') {
            *pos += 1;
            hi = class_char(chars, pos)?;
        }
        ranges.push((lo, hi));
    }
}

/// Go's `getEsc`: one (possibly escaped) class character, which must not be the end.
fn class_char(chars: &[char], pos: &mut usize) -> Option<char> {
    match chars.get(*pos)? {
        '-' | ']' => return None,
        '\\' => *pos += 1,
        _ => {}
    }
    let ch = *chars.get(*pos)?;
    *pos += 1;
    if *pos >= chars.len() {
        return None;
    }
    Some(ch)
}

/// Compiles a cleaned pattern as patternmatcher's `Pattern.compile` decides its match
/// kind. `None` when `filepath.Match` would call it malformed.
fn compile(pattern: &str) -> Option<(MatchKind, Vec<Tok>)> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut kind = MatchKind::Exact;
    let mut tokens = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if kind == MatchKind::Exact {
                        kind = MatchKind::Prefix;
                    } else {
                        tokens.push(Tok::AnyAll);
                        kind = MatchKind::Glob;
                    }
                } else {
                    tokens.push(Tok::AnyDirs);
                    kind = MatchKind::Glob;
                }
                if first {
                    kind = MatchKind::Suffix;
                }
            }
            '*' => {
                tokens.push(Tok::Star);
                kind = MatchKind::Glob;
            }
            '?' => {
                tokens.push(Tok::One);
                kind = MatchKind::Glob;
            }
            '\\' => match chars.get(pos) {
                Some(&next) => {
                    tokens.push(Tok::Lit(next));
                    pos += 1;
                    kind = MatchKind::Glob;
                }
                // filepath.Match rejects a trailing backslash.
                None => return None,
            },
            '[' => {
                tokens.push(parse_class(&chars, &mut pos)?);
                kind = MatchKind::Glob;
            }
            ']' => {
                tokens.push(Tok::Lit(ch));
                kind = MatchKind::Glob;
            }
            // Regexp specials (`.+()|{}$`) are escaped by patternmatcher: plain here.
            _ => tokens.push(Tok::Lit(ch)),
        }
        first = false;
    }
    // Prefix and suffix kinds slice the cleaned pattern at two bytes (`**`).
    if matches!(kind, MatchKind::Prefix | MatchKind::Suffix) && pattern.len() < 2 {
        return None;
    }
    Some((kind, tokens))
}

/// Whether the tokens match all of `path` (an NFA run, so no backtracking blow-up).
fn glob_match(tokens: &[Tok], path: &str) -> bool {
    let m = tokens.len();
    // State 2i: before token i; state 2i+1: inside the `.*` of an AnyDirs token i.
    let closure = |set: &mut [bool]| {
        for i in 0..m {
            if set[2 * i] {
                match tokens[i] {
                    Tok::Star | Tok::AnyAll => set[2 * (i + 1)] = true,
                    Tok::AnyDirs => {
                        set[2 * (i + 1)] = true;
                        set[2 * i + 1] = true;
                    }
                    _ => {}
                }
            }
        }
    };
    let mut set = vec![false; 2 * (m + 1)];
    set[0] = true;
    closure(&mut set);
    for c in path.chars() {
        let mut next = vec![false; 2 * (m + 1)];
        let mut any = false;
        for i in 0..m {
            if set[2 * i] {
                let to = match &tokens[i] {
                    Tok::Lit(l) => (*l == c).then_some(2 * (i + 1)),
                    Tok::One => (c != '/').then_some(2 * (i + 1)),
                    Tok::Star => (c != '/').then_some(2 * i),
                    Tok::AnyAll => (c != '\n').then_some(2 * i),
                    Tok::AnyDirs => None,
                    Tok::Class { negated, ranges } => {
                        let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                        (inside != *negated).then_some(2 * (i + 1))
                    }
                };
                if let Some(to) = to {
                    next[to] = true;
                    any = true;
                }
            }
            if set[2 * i + 1] {
                if c != '\n' {
                    next[2 * i + 1] = true;
                    any = true;
                }
                if c == '/' {
                    next[2 * (i + 1)] = true;
                    any = true;
                }
            }
        }
        if !any {
            return false;
        }
        closure(&mut next);
        set = next;
    }
    set[2 * m]
}

/// Every path under `root` that `ignore` does not exclude: files, directories and
/// symlinks (not followed), relative to `root` with `/`, sorted. An excluded directory
/// is not descended into unless the patterns have exceptions. A name that is not UTF-8
/// is an `InvalidData` error.
pub fn context_files(root: &Path, ignore: &Ignore) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, "", ignore, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, ignore: &Ignore, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("file name is not UTF-8: {}", entry.path().display()),
            ));
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let excluded = ignore.is_excluded(&rel);
        let is_dir = entry.file_type()?.is_dir();
        if is_dir && (!excluded || ignore.has_exceptions()) {
            walk(&entry.path(), &rel, ignore, out)?;
        }
        if !excluded {
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &str, path: &str) -> bool {
        Ignore::parse(patterns).unwrap().is_excluded(path)
    }

    /// Cases from patternmatcher's `TestMatches` and `TestMatchesOrParentMatches`
    /// (pattern, path, matched).
    #[test]
    fn patternmatcher_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            // Parent-directory matching.
            ("dir", "dir/file", true),
            ("dir", "dir/sub/file", true),
            ("*", "dir/file", true),
            ("dir/*", "dir/sub/file", true),
            ("foo", "foobar", false),
        ];
        for &(pattern, path, want) in cases {
            assert_eq!(
                excluded(pattern, path),
                want,
                "pattern {pattern:?} path {path:?}"
            );
        }
    }

    #[test]
    fn exceptions_and_order() {
        let ignore = Ignore::parse("*.md\n!README.md\n").unwrap();
        assert!(ignore.has_exceptions());
        assert!(ignore.is_excluded("CHANGES.md"));
        assert!(!ignore.is_excluded("README.md"));
        assert!(!ignore.is_excluded("main.rs"));

        // The last match wins: re-excluded after the exception.
        let ignore = Ignore::parse("*.md\n!README*.md\nREADME-secret.md\n").unwrap();
        assert!(ignore.is_excluded("README-secret.md"));
        assert!(!ignore.is_excluded("README-public.md"));

        // An exception inside an excluded directory.
        let ignore = Ignore::parse("docs\n!docs/keep.txt\n").unwrap();
        assert!(ignore.is_excluded("docs"));
        assert!(ignore.is_excluded("docs/drop.txt"));
        assert!(!ignore.is_excluded("docs/keep.txt"));

        // `**` exceptions.
        let ignore = Ignore::parse("**/*.log\n!**/important.log\n").unwrap();
        assert!(ignore.is_excluded("a/b/c.log"));
        assert!(!ignore.is_excluded("a/b/important.log"));

        let ignore = Ignore::parse("node_modules").unwrap();
        assert!(!ignore.has_exceptions());
        assert!(ignore.is_excluded("node_modules/x/y.js"));
    }

    #[test]
    fn lines_are_cleaned_and_comments_skipped() {
        let ignore = Ignore::parse(
            "\u{feff}# comment\n\n  ./build/  \n/abs\n\t!  ./build/keep\r\na/../b\n # not a comment\n",
        )
        .unwrap();
        let cleaned: Vec<&str> = ignore.patterns.iter().map(|p| p.cleaned.as_str()).collect();
        assert_eq!(
            cleaned,
            ["build", "abs", "build/keep", "b", "# not a comment"]
        );
        assert!(ignore.is_excluded("build/x"));
        assert!(!ignore.is_excluded("build/keep"));
        assert!(ignore.is_excluded("abs"));
        assert!(ignore.is_excluded("./abs"));
        assert!(!ignore.is_excluded("."));
        assert!(!ignore.is_excluded(""));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert_eq!(
            Ignore::parse("ok\n!\n").unwrap_err(),
            IgnoreError::BareExclusion { line: 2 }
        );
        for bad in ["a[", "a[]", "[a-]", "a\\", "[z", "[^]"] {
            assert!(
                matches!(
                    Ignore::parse(bad),
                    Err(IgnoreError::BadPattern { line: 1, .. })
                ),
                "{bad}"
            );
        }
        assert!(Ignore::parse("a[\\]]b").unwrap().is_excluded("a]b"));
    }

    #[test]
    fn context_files_walks_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["src", "target/debug", "docs/old"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "Dockerfile",
            ".dockerignore",
            "src/main.rs",
            "src/notes.md",
            "target/debug/app",
            "docs/README.md",
            "docs/old/a.md",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }

        let ignore = Ignore::parse("target\n*.md\n**/*.md\n").unwrap();
        assert_eq!(
            context_files(root, &ignore).unwrap(),
            [
                ".dockerignore",
                "Dockerfile",
                "docs",
                "docs/old",
                "src",
                "src/main.rs"
            ]
        );

        let ignore = Ignore::parse("target\ndocs\n!docs/old/a.md\n").unwrap();
        assert_eq!(
            context_files(root, &ignore).unwrap(),
            [
                ".dockerignore",
                "Dockerfile",
                "docs/old/a.md",
                "src",
                "src/main.rs",
                "src/notes.md"
            ]
        );

        assert_eq!(context_files(root, &Ignore::default()).unwrap().len(), 12);
    }

    #[test]
    fn copy_wildcards_match_within_a_name() {
        assert!(glob_matches("*.txt", "a.txt"));
        assert!(!glob_matches("*.txt", "dir/a.txt"));
        assert!(glob_matches("dir/?.txt", "dir/a.txt"));
        assert!(glob_matches("/dir/[ab].txt", "dir/b.txt"));
        assert!(glob_matches("**/*.rs", "src/deep/main.rs"));
        assert!(glob_matches("plain", "plain"));
        assert!(!glob_matches("[", "["));
    }
}
