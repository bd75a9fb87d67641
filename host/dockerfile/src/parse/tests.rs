use super::*;

fn kinds(text: &str) -> Vec<Kind> {
    parse(text)
        .unwrap()
        .instructions
        .into_iter()
        .map(|i| i.kind)
        .collect()
}

fn err(text: &str) -> ParseError {
    parse(text).unwrap_err()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn continuation_lines_join_without_the_escape() {
    let df = parse("FROM alpine\nRUN echo a && \\\n    echo b\n").unwrap();
    let run = &df.instructions[1];
    assert_eq!(run.line, 2);
    assert_eq!(run.text, "RUN echo a &&     echo b");
    assert_eq!(
        run.kind,
        Kind::Run(Form::Shell("echo a &&     echo b".into()))
    );
    assert_eq!(df.escape, '\\');
}

#[test]
fn comments_and_blank_lines_between_continuations() {
    // The reference's example: comments inside a continued RUN are removed.
    let df = parse(
        "FROM alpine\nRUN apt-get update \\\n  # install curl\n\n    && apt-get install -y curl \\\n  # done\n    && echo ok\n# trailing\nUSER nobody\n",
    )
    .unwrap();
    assert_eq!(
        df.instructions[1].kind,
        Kind::Run(Form::Shell(
            "apt-get update     && apt-get install -y curl     && echo ok".into()
        ))
    );
    assert_eq!(df.instructions[2].line, 9);
    assert_eq!(df.instructions[2].kind, Kind::User("nobody".into()));
}

#[test]
fn escape_directive_with_backtick_windows_paths() {
    // The reference's Windows example.
    let df = parse(
        "# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\nRUN echo a `\n  b\n",
    )
    .unwrap();
    assert_eq!(df.escape, '`');
    let k: Vec<Kind> = df.instructions.into_iter().map(|i| i.kind).collect();
    assert_eq!(
        k[1],
        Kind::Copy(CopyArgs {
            sources: s(&["testfile.txt"]),
            dest: "c:\\".into(),
            from: None,
            chown: None,
            chmod: None
        })
    );
    assert_eq!(k[2], Kind::Run(Form::Shell("dir c:\\".into())));
    assert_eq!(k[3], Kind::Run(Form::Shell("echo a   b".into())));
}

#[test]
fn directives_only_at_the_top() {
    // Not at the top: a plain comment, so `\` stays the escape.
    let df = parse("FROM a\n# escape=`\nRUN x \\\n y\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(
        df.instructions[1].kind,
        Kind::Run(Form::Shell("x  y".into()))
    );
    // After another comment: also not a directive.
    assert_eq!(parse("# hi\n# escape=`\nFROM a\n").unwrap().escape, '\\');
    // Syntax and escape together, any case, spaces allowed.
    let df = parse("# syntax=docker/dockerfile:1\n#  ESCAPE = `\nFROM a\n").unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    let e = err("# escape=x\nFROM a\n");
    assert_eq!(e.line, 1);
    assert_eq!(e.message, "invalid escape token 'x' does not match ` or \\");
    let e = err("# escape=`\n# escape=\\\nFROM a\n");
    assert_eq!(
        (e.line, e.message.as_str()),
        (2, "only one escape parser directive can be used")
    );
}

#[test]
fn instruction_names_are_case_insensitive() {
    assert_eq!(
        kinds("from alpine as Build\nrun ls\nWorkDir /x\n"),
        vec![
            Kind::From {
                image: "alpine".into(),
                name: Some("build".into()),
                platform: None
            },
            Kind::Run(Form::Shell("ls".into())),
            Kind::Workdir("/x".into()),
        ]
    );
}

#[test]
fn from_forms_and_errors() {
    assert_eq!(
        kinds("FROM --platform=$BUILDPLATFORM golang:1.22 AS build-env.1\n")[0],
        Kind::From {
            image: "golang:1.22".into(),
            name: Some("build-env.1".into()),
            platform: Some("$BUILDPLATFORM".into())
        }
    );
    assert_eq!(
        err("FROM\n").message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a AS\n").message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a b c\n").message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a AS 1st\n").message,
        "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    assert!(err("FROM a AS b@c\n").message.starts_with("invalid name"));
    assert_eq!(
        err("FROM --platform a\n").message,
        "missing a value on flag: platform"
    );
}

#[test]
fn env_both_forms() {
    // The reference's examples.
    assert_eq!(
        kinds("FROM a\nENV MY_NAME=\"John Doe\"\nENV MY_DOG=Rex\\ The\\ Dog\nENV MY_CAT=fluffy\nENV MY_NAME=\"John Doe\" MY_DOG=Rex\\ The\\ Dog \\\n    MY_CAT=fluffy\nENV ONE TWO= THREE=world\n")[1..],
        [
            Kind::Env(pairs(&[("MY_NAME", "\"John Doe\"")])),
            Kind::Env(pairs(&[("MY_DOG", "Rex\\ The\\ Dog")])),
            Kind::Env(pairs(&[("MY_CAT", "fluffy")])),
            Kind::Env(pairs(&[
                ("MY_NAME", "\"John Doe\""),
                ("MY_DOG", "Rex\\ The\\ Dog"),
                ("MY_CAT", "fluffy")
            ])),
            Kind::Env(pairs(&[("ONE", "TWO= THREE=world")])),
        ]
    );
    assert_eq!(
        err("FROM a\nENV\n").message,
        "ENV requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nENV KEY\n").message,
        "ENV must have two arguments"
    );
    assert_eq!(
        err("FROM a\nENV a=1 b\n").message,
        "Syntax error - can't find = in \"b\". Must be of the form: name=value"
    );
    assert_eq!(
        err("FROM a\nENV =x\n").message,
        "ENV names can not be blank"
    );
    // The value expands as docker's lexer does.
    let Kind::Env(p) = &kinds("FROM a\nENV MY_DOG=Rex\\ The\\ Dog\n")[1] else {
        panic!()
    };
    assert_eq!(
        crate::lex::expand(&p[0].1, &|_| None, '\\').unwrap(),
        "Rex The Dog"
    );
}

#[test]
fn label_multi() {
    // The reference's examples.
    assert_eq!(
        kinds("FROM a\nLABEL \"com.example.vendor\"=\"ACME Incorporated\"\nLABEL com.example.label-with-value=\"foo\"\nLABEL version=\"1.0\"\nLABEL description=\"This text illustrates \\\nthat label-values can span multiple lines.\"\nLABEL multi.label1=\"value1\" multi.label2=\"value2\" other=\"value3\"\n")[1..],
        [
            Kind::Label(pairs(&[("\"com.example.vendor\"", "\"ACME Incorporated\"")])),
            Kind::Label(pairs(&[("com.example.label-with-value", "\"foo\"")])),
            Kind::Label(pairs(&[("version", "\"1.0\"")])),
            Kind::Label(pairs(&[(
                "description",
                "\"This text illustrates that label-values can span multiple lines.\""
            )])),
            Kind::Label(pairs(&[
                ("multi.label1", "\"value1\""),
                ("multi.label2", "\"value2\""),
                ("other", "\"value3\"")
            ])),
        ]
    );
}

#[test]
fn json_and_shell_forms() {
    let k = kinds(
        "FROM a\nRUN [\"/bin/bash\", \"-c\", \"echo hello\"]\nCMD [\"echo\", \"$HOME\"]\nENTRYPOINT top -b\nRUN [ \"echo\", 'single' ]\nCMD [\"a\"] extra\nENTRYPOINT []\n",
    );
    assert_eq!(
        k[1],
        Kind::Run(Form::Exec(s(&["/bin/bash", "-c", "echo hello"])))
    );
    assert_eq!(k[2], Kind::Cmd(Form::Exec(s(&["echo", "$HOME"]))));
    assert_eq!(k[3], Kind::Entrypoint(Form::Shell("top -b".into())));
    // Invalid JSON (single quotes) falls back to the shell form, as docker does.
    assert_eq!(
        k[4],
        Kind::Run(Form::Shell("[ \"echo\", 'single' ]".into()))
    );
    assert_eq!(k[5], Kind::Cmd(Form::Shell("[\"a\"] extra".into())));
    assert_eq!(k[6], Kind::Entrypoint(Form::Exec(vec![])));
    assert_eq!(
        err("FROM a\nRUN [\"a\", 1]\n").message,
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!(
        err("FROM a\nRUN\n").message,
        "RUN requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nCMD\n").message,
        "CMD requires at least one argument"
    );
}

#[test]
fn shell_must_be_json() {
    assert_eq!(
        kinds("FROM a\nSHELL [\"powershell\", \"-command\"]\n")[1],
        Kind::Shell(s(&["powershell", "-command"]))
    );
    assert_eq!(
        err("FROM a\nSHELL powershell -command\n").message,
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        err("FROM a\nSHELL []\n").message,
        "SHELL requires at least one argument"
    );
}

#[test]
fn arg_scoping_example() {
    // The reference's ARG scope example, parsed (scoping is the builder's business).
    let df = parse(
        "ARG  CODE_VERSION=latest\nARG BASE\nFROM base:${CODE_VERSION}\nARG user1=someuser buildno\nARG \"q\"=\"a b\"\nUSER ${user1:-some_user}\n",
    )
    .unwrap();
    let k: Vec<Kind> = df.instructions.into_iter().map(|i| i.kind).collect();
    assert_eq!(
        k[0],
        Kind::Arg(vec![("CODE_VERSION".into(), Some("latest".into()))])
    );
    assert_eq!(k[1], Kind::Arg(vec![("BASE".into(), None)]));
    assert!(matches!(&k[2], Kind::From { image, .. } if image == "base:${CODE_VERSION}"));
    assert_eq!(
        k[3],
        Kind::Arg(vec![
            ("user1".into(), Some("someuser".into())),
            ("buildno".into(), None)
        ])
    );
    assert_eq!(
        k[4],
        Kind::Arg(vec![("\"q\"".into(), Some("\"a b\"".into()))])
    );
    assert_eq!(k[5], Kind::User("${user1:-some_user}".into()));
    assert_eq!(err("ARG\n").message, "ARG requires at least one argument");
    assert_eq!(err("ARG =x\n").message, "ARG names can not be blank");
    let e = err("ARG a\nRUN x\n");
    assert_eq!(
        (e.line, e.message.as_str()),
        (2, "no build stage in current context")
    );
}

#[test]
fn copy_and_add() {
    let k = kinds(
        "FROM a\nCOPY --from=build --chown=1:2 --chmod=644 a b /dst/\nADD [\"a b\", \"/x y/\"]\nCOPY --chown=\"user name\" x y\n",
    );
    assert_eq!(
        k[1],
        Kind::Copy(CopyArgs {
            sources: s(&["a", "b"]),
            dest: "/dst/".into(),
            from: Some("build".into()),
            chown: Some("1:2".into()),
            chmod: Some("644".into())
        })
    );
    assert_eq!(
        k[2],
        Kind::Add(CopyArgs {
            sources: s(&["a b"]),
            dest: "/x y/".into(),
            from: None,
            chown: None,
            chmod: None
        })
    );
    assert!(matches!(&k[3], Kind::Copy(c) if c.chown.as_deref() == Some("user name")));
    let two = "COPY requires at least two arguments, but only one was provided. Destination could not be determined";
    assert_eq!(err("FROM a\nCOPY onlyone\n").message, two);
    assert_eq!(err("FROM a\nCOPY\n").message, two);
    assert_eq!(err("FROM a\nCOPY [\"x\"]\n").message, two);
    assert_eq!(
        err("FROM a\nADD --from=x a b\n").message,
        "unknown flag: --from"
    );
    assert_eq!(
        err("FROM a\nCOPY --link a b\n").message,
        "berth build does not support COPY --link yet"
    );
    assert_eq!(
        err("FROM a\nCOPY --parents a b\n").message,
        "berth build does not support COPY --parents yet"
    );
    assert_eq!(
        err("FROM a\nADD --checksum=sha256:x a b\n").message,
        "berth build does not support ADD --checksum yet"
    );
    assert_eq!(
        err("FROM a\nADD --keep-git-dir=true a b\n").message,
        "berth build does not support ADD --keep-git-dir yet"
    );
    assert_eq!(
        err("FROM a\nCOPY --from=a --from=b x y\n").message,
        "duplicate flag specified: from"
    );
    assert!(err("FROM a\nCOPY <<EOF /x\nhi\nEOF\n")
        .message
        .contains("heredoc"));
}

#[test]
fn run_flags_and_heredocs() {
    assert_eq!(
        err("FROM a\nRUN --mount=type=cache,target=/x make\n").message,
        "berth build does not support RUN --mount yet"
    );
    assert_eq!(
        err("FROM a\nRUN --network=none make\n").message,
        "berth build does not support RUN --network yet"
    );
    assert_eq!(
        err("FROM a\nRUN --bogus make\n").message,
        "unknown flag: --bogus"
    );
    assert_eq!(err("FROM a\nWORKDIR --x /a\n").message, "unknown flag: --x");
    let e = err("FROM a\nRUN <<EOF\necho hi\nEOF\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("heredoc"), "{}", e.message);
    assert!(err("FROM a\nRUN cat <<-\"EOF\" > /x\n")
        .message
        .contains("heredoc"));
    // Not heredocs: inside quotes, or a bare `<<`.
    assert_eq!(
        kinds("FROM a\nRUN echo \"a <<b\" x << y\n")[1],
        Kind::Run(Form::Shell("echo \"a <<b\" x << y".into()))
    );
    // `--` ends the flags.
    assert_eq!(
        kinds("FROM a\nRUN -- --version\n")[1],
        Kind::Run(Form::Shell("--version".into()))
    );
}

#[test]
fn single_argument_instructions() {
    let k = kinds(
        "FROM a\nWORKDIR /path/to/$DIRNAME\nUSER patrick:staff\nSTOPSIGNAL SIGKILL\nMAINTAINER Jane <j@x>\nEXPOSE 80/tcp  80/udp\nVOLUME [\"/data\"]\nVOLUME /var/log /var/db\n",
    );
    assert_eq!(k[1], Kind::Workdir("/path/to/$DIRNAME".into()));
    assert_eq!(k[2], Kind::User("patrick:staff".into()));
    assert_eq!(k[3], Kind::StopSignal("SIGKILL".into()));
    assert_eq!(k[4], Kind::Maintainer("Jane <j@x>".into()));
    assert_eq!(k[5], Kind::Expose(s(&["80/tcp", "80/udp"])));
    assert_eq!(k[6], Kind::Volume(s(&["/data"])));
    assert_eq!(k[7], Kind::Volume(s(&["/var/log", "/var/db"])));
    assert_eq!(
        err("FROM a\nWORKDIR\n").message,
        "WORKDIR requires exactly one argument"
    );
    assert_eq!(
        err("FROM a\nUSER\n").message,
        "USER requires exactly one argument"
    );
    assert_eq!(
        err("FROM a\nEXPOSE\n").message,
        "EXPOSE requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nVOLUME\n").message,
        "VOLUME requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nVOLUME [\" \"]\n").message,
        "VOLUME specified can not be an empty string"
    );
}

#[test]
fn healthcheck_forms() {
    let k = kinds(
        "FROM a\nHEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 \\\n  CMD curl -f http://localhost/ || exit 1\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\nHEALTHCHECK NONE\nHEALTHCHECK --interval=0s cmd true\n",
    );
    assert_eq!(
        k[1],
        Kind::Healthcheck(Some(Healthcheck {
            test: s(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"]),
            interval: Some(Duration::from_secs(300)),
            timeout: Some(Duration::from_secs(3)),
            start_period: Some(Duration::from_secs(90)),
            start_interval: Some(Duration::from_millis(500)),
            retries: Some(3),
        }))
    );
    assert_eq!(
        k[2],
        Kind::Healthcheck(Some(Healthcheck {
            test: s(&["CMD", "/bin/check", "-q"]),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        }))
    );
    assert_eq!(k[3], Kind::Healthcheck(None));
    assert!(matches!(&k[4], Kind::Healthcheck(Some(h)) if h.interval.is_none()));
    assert_eq!(
        err("FROM a\nHEALTHCHECK\n").message,
        "HEALTHCHECK requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK NONE x\n").message,
        "HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK CMD\n").message,
        "Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK FOO bar\n").message,
        "Unknown type \"FOO\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --interval=10 CMD x\n").message,
        "time: missing unit in duration \"10\""
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --timeout=1us CMD x\n").message,
        "Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").message,
        "--retries cannot be negative (-1)"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --bogus=1 CMD x\n").message,
        "unknown flag: --bogus"
    );
}

#[test]
fn go_durations() {
    let ok = |s: &str| parse_go_duration(s).unwrap();
    assert_eq!(ok("30s"), (false, 30_000_000_000));
    assert_eq!(ok("1m30s"), (false, 90_000_000_000));
    assert_eq!(ok("500ms"), (false, 500_000_000));
    assert_eq!(ok("1.5h"), (false, 5_400_000_000_000));
    assert_eq!(ok(".5s"), (false, 500_000_000));
    assert_eq!(ok("1h2m3s4ms5us6ns"), (false, 3_723_004_005_006));
    assert_eq!(ok("-2s"), (true, 2_000_000_000));
    assert_eq!(ok("0"), (false, 0));
    for bad in ["", "s", "1", "1x", ".s", "1.2.3s", "99999999999h", "-"] {
        assert!(parse_go_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn onbuild_triggers() {
    let k = kinds(
        "FROM a\nONBUILD ADD . /app/src\nonbuild RUN /usr/local/bin/python-build --dir /app/src\n",
    );
    assert_eq!(k[1], Kind::Onbuild("ADD . /app/src".into()));
    assert_eq!(
        k[2],
        Kind::Onbuild("RUN /usr/local/bin/python-build --dir /app/src".into())
    );
    assert_eq!(
        err("FROM a\nONBUILD ONBUILD RUN x\n").message,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err("FROM a\nONBUILD FROM x\n").message,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM a\nONBUILD maintainer x\n").message,
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM a\nONBUILD\n").message,
        "ONBUILD requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nONBUILD FOO x\n").message,
        "unknown instruction: FOO"
    );
}

#[test]
fn errors_carry_the_starting_line() {
    let e = err("FROM a\n\n# c\nRUN ok\nFOO bar \\\n  baz\n");
    assert_eq!(e.line, 5);
    assert_eq!(e.message, "unknown instruction: FOO");
    assert_eq!(e.to_string(), "Dockerfile line 5: unknown instruction: FOO");
    assert_eq!(err("").message, "file with no instructions");
    assert_eq!(err("# only\n\n").message, "file with no instructions");
    let _: &dyn std::error::Error = &e;
}

#[test]
fn crlf_bom_and_trailing_continuation() {
    let df = parse("\u{feff}FROM a\r\nRUN a \\\r\n b\r\nRUN c \\").unwrap();
    assert_eq!(
        df.instructions[1].kind,
        Kind::Run(Form::Shell("a  b".into()))
    );
    assert_eq!(
        df.instructions[2].kind,
        Kind::Run(Form::Shell("c ".trim_end().into()))
    );
}

/// A tiny deterministic generator (xorshift), so the mutation test needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SAMPLE: &str = "# syntax=docker/dockerfile:1\n# escape=\\\nARG BASE=alpine:3.19\nFROM --platform=$BUILDPLATFORM ${BASE} AS build\nENV A=1 B=\"two words\" C=${A:-x}\nENV LEGACY value here\nLABEL \"k\"=\"v\" other=x\nRUN apk add --no-cache \\\n    # comment\n    curl && echo \"${A}\" '${B}'\nCOPY --from=build --chown=1:1 [\"a\", \"/b\"]\nADD --chmod=644 src/ /dst/\nWORKDIR /app/${A}\nUSER 1000:1000\nSHELL [\"/bin/sh\", \"-c\"]\nEXPOSE 80 443/udp\nVOLUME [\"/data\"]\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=30s --retries=3 CMD [\"true\"]\nONBUILD RUN echo hi\nCMD [\"./app\", \"--flag\"]\nENTRYPOINT exec ./app\nMAINTAINER me\n";

#[test]
fn mutated_input_never_panics() {
    let alphabet = b"\\`\"'$ {}[]:-+?#%/=\n\t\r*!<>,.aZ09";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let env = |name: &str| (!name.len().is_multiple_of(3)).then(|| format!("v{name} x"));
    for _ in 0..4000 {
        let mut bytes = SAMPLE.as_bytes().to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len() + 1);
            let byte = if rng.below(8) == 0 {
                rng.next() as u8
            } else {
                alphabet[rng.below(alphabet.len())]
            };
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(df) = parse(&text) {
            for ins in &df.instructions {
                let _ = crate::lex::expand(&ins.text, &env, df.escape);
                let _ = crate::lex::expand_words(&ins.text, &env, df.escape);
            }
        }
        let _ = crate::lex::expand(&text, &env, '\\');
        let _ = crate::lex::expand_words(&text, &env, '`');
        if let Ok(ignore) = crate::ignore::Ignore::parse(&text) {
            for path in [
                "a",
                "a/b/c",
                "src/main.rs",
                ".",
                "x/y",
                "RUN",
                "/etc/passwd",
            ] {
                let _ = ignore.is_excluded(path);
            }
            for line in text.lines().take(5) {
                let _ = ignore.is_excluded(line);
            }
        }
    }
}
