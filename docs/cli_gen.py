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
    ["train", "align-init"],
    ["train", "pretrain"],
    ["plot"],
]

print("# Command line reference\n")
print("Generated from `--help` by `python docs/cli_gen.py > docs/cli.md`. Every command exits with code 2 and")
print("one line `error: FILE:LINE: message` on bad input, and writes nothing in that case.\n")
for cmd in COMMANDS:
    env = {**os.environ, "COLUMNS": "110"}
    out = subprocess.run(["prealign-data", *cmd, "--help"], capture_output=True, text=True, env=env, check=True)
    print(f"## `prealign-data {' '.join(cmd)}`\n\n```text\n{out.stdout.rstrip()}\n```\n")
