//! Running a simple shell command without the shell.
//!
//! A `command = "node build.js"` string runs as `/bin/sh -c 'node build.js'`:
//! one more `execve` (the shell's loader, its startup) per action, about as
//! much CPU as building the sandbox (bench/README.md). When the string is a
//! plain list of words the shell would pass through unchanged (no quoting,
//! expansion, redirection, operator, comment, assignment or glob) and its
//! first word names no shell builtin or keyword, `sh -c` would do nothing
//! but search PATH and exec those words, which the sandbox does itself
//! (the same `execvpe`-style search). Only the process started differs;
//! the action key still covers the command as written.

/// Builtins and keywords of POSIX sh (and dash) whose behaviour as a
/// builtin may differ from a program of the same name (`echo`, `test`,
/// `printf`, `pwd`, `kill`, `true`...), or that exist only in the shell.
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done",
    "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi",
    "for", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read",
    "readonly", "return", "set", "shift", "test", "then", "times", "trap", "true", "type",
    "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// The argv to start: `argv` itself, or for `/bin/sh -c SCRIPT` with a
/// SCRIPT of plain words, those words.
pub(super) fn spawn_argv(argv: &[String]) -> Vec<String> {
    match argv {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" => {
            plain_words(script).unwrap_or_else(|| argv.to_vec())
        }
        _ => argv.to_vec(),
    }
}

fn plain_words(script: &str) -> Option<Vec<String>> {
    // Characters the shell gives no meaning to (in any position: `=` and
    // `~` only matter in places checked below or not allowed at all).
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./,:+@%=".contains(c);
    let words: Vec<&str> = script
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    let first = *words.first()?;
    let plain_script = script.chars().all(|c| plain(c) || c == ' ' || c == '\t');
    // `NAME=value cmd` is an assignment; a builtin or keyword must stay the shell's.
    if !plain_script || first.contains('=') || SHELL_WORDS.contains(&first) {
        return None;
    }
    Some(words.into_iter().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn plain_words_run_directly() {
        assert_eq!(spawn_argv(&sh("node build.js")), ["node", "build.js"]);
        assert_eq!(
            spawn_argv(&sh("  tsc -p tsconfig.json  --outDir=dist ")),
            ["tsc", "-p", "tsconfig.json", "--outDir=dist"]
        );
        assert_eq!(
            spawn_argv(&sh("./scripts/gen.sh a,b 50%")),
            ["./scripts/gen.sh", "a,b", "50%"]
        );
    }

    #[test]
    fn anything_the_shell_interprets_keeps_the_shell() {
        for script in [
            "node build.js > out.txt",
            "echo hi",
            "true",
            "cd src && make",
            "FOO=1 node x.js",
            "node $ENTRY",
            "node 'a b.js'",
            "rm -rf dist/*",
            "node a.js # note",
            "node a.js; node b.js",
            "ls ~/x",
            "node a.js\nnode b.js",
            "exec node a.js",
            "",
            "   ",
        ] {
            assert_eq!(spawn_argv(&sh(script)), sh(script), "{script:?}");
        }
        // An argv given as an array is never touched.
        let argv: Vec<String> = vec!["/bin/sh".into(), "-c".into()];
        assert_eq!(spawn_argv(&argv), argv);
        assert_eq!(spawn_argv(&["node".into(), "a b".into()]), ["node", "a b"]);
    }
}
