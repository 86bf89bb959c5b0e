"""Regenerate docs/cli.md from the commands' --help: python docs/cli_gen.py > docs/cli.md"""

import os
import subprocess

COMMANDS = [
    [],
    ["demo"],
    ["extract-lexicon"],
    ["align"],
    ["eval-align"],
    ["eval-lexicon"],
    ["tokenizer", "train"],
    ["switch"],
    ["inspect"],
    ["export"],
    ["export-model"],
    ["train", "align-init"],
    ["train", "pretrain"],
    ["train", "eval"],
    ["plot"],
    ["clone", "make"],
    ["experiment", "clone"],
]

print("# Command line reference\n")
print(
    """Generated from `--help` by `python docs/cli_gen.py > docs/cli.md`.

Errors: every command reports a problem as one line on stderr and exits with code 2, writing nothing:
- bad input: `error: FILE:LINE: message` (or `error: FILE: message`);
- a usage error (a missing or unknown option, a bad value): `error: prealign-data COMMAND: message (see
  'prealign-data COMMAND --help')`;
- a full disk: `error: FILE: no space left on device`.

Exit codes: 0 done (also "already done": the same job rerun on its finished output), 1 `inspect` found shards
that do not match their manifest, 2 any error above. docs/reliability.md lists every bad input and fault the
tests try, with what the tool does.
"""
)
for cmd in COMMANDS:
    env = {**os.environ, "COLUMNS": "110"}
    out = subprocess.run(["prealign-data", *cmd, "--help"], capture_output=True, text=True, env=env, check=True)
    print(f"## `prealign-data {' '.join(cmd)}`\n\n```text\n{out.stdout.rstrip()}\n```\n")
