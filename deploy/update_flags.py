#!/usr/bin/env python3
"""Regenerates the flag sections of deploy/sparkled.env and the --tryfromenv list of
deploy/sparkled.service from `sparkled --helpfull`, after a flag was added, renamed or removed
in server/main.cc (ctest -R deploy_files fails until then).

Keeps the header of the env file and every active (uncommented) FLAGS_<name>= line, with the
comment lines just above it, as they are.   usage: deploy/update_flags.py build/server/sparkled
"""
import pathlib
import re
import subprocess
import sys
import textwrap

here = pathlib.Path(__file__).resolve().parent
helpfull = subprocess.run([sys.argv[1], "--helpfull"], capture_output=True, text=True).stdout
block = helpfull[helpfull.index("server/main.cc"):]
block = block[:block.index("\n\n")]
flags = re.findall(r"--(\w+) \((.*?)\);\s+default: (.*?);(?:\n|$)", block, re.S)

env_path = here / "sparkled.env"
env = env_path.read_text()
header, _, body = env.partition("\n\n")
active = {}  # name -> the paragraph that sets it
for paragraph in body.split("\n\n"):
    m = re.search(r"^FLAGS_(\w+)=", paragraph, re.M)
    if m:
        active[m.group(1)] = paragraph.strip("\n")

paragraphs = []
for name, text, default in flags:
    if name in active:
        paragraphs.append(active[name])
        continue
    default = default.strip()
    if default.startswith('"') and default.endswith('"'):
        default = default[1:-1]
    lines = ["# " + line for line in textwrap.wrap(" ".join(text.split()), 94)]
    paragraphs.append("\n".join(lines + [f"#FLAGS_{name}={default}"]))
env_path.write_text(header + "\n\n" + "\n\n".join(paragraphs) + "\n")

unit_path = here / "sparkled.service"
unit = unit_path.read_text()
unit = re.sub(r"--tryfromenv=[a-z0-9_,]+", "--tryfromenv=" + ",".join(n for n, _, _ in flags),
              unit)
unit_path.write_text(unit)
print(f"{len(flags)} flags written to {env_path.name} and {unit_path.name}")
