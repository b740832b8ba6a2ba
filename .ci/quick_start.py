"""Print a command of the README's Quick start block: `--main` (the first) or `--test` (the second)."""
import re
import sys
from pathlib import Path

text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
block = re.search(r"^##\s*Quick start.*?```[a-z]*\n(.*?)```", text, re.S | re.M | re.I)
if block is None:
    sys.exit("README.md has no '## Quick start' section with a code block")
commands = [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]
if len(commands) != 2:
    sys.exit(f"the Quick start block holds {len(commands)} commands, not 2")
print(commands[0] if "--main" in sys.argv else commands[1])
