"""Generate ``docs/cli.md`` from the click commands themselves, so it cannot drift.

    python docs/clidoc.py > docs/cli.md

A test regenerates it and compares, and parses every example command.
"""

from __future__ import annotations

import click

EXAMPLES = {
    "phasefeat enhance": ["phasefeat enhance", "phasefeat enhance cxr.png --size 299 -o maps.png --enh-png enh.png"],
    "phasefeat demo-data": ["phasefeat demo-data raw/ --per-class 40 --seed 0",
                            "phasefeat demo-data raw/ --shortcut"],
    "phasefeat convert": [
        "phasefeat convert raw/ enh.h5",
        "phasefeat convert raw/ enh.h5 --labels train.txt --classes normal,pneumonia,covid",
        "phasefeat convert raw/ enh.h5 --backend cupy --batch-size 256 --workers 8",
        "phasefeat convert raw/ enh.h5 --alias 'Lung_Opacity=pneumonia' --fit pad --cxr-dtype uint16",
        "phasefeat convert raw/ enh.h5 --preset kovesi --features-at 299",
        "phasefeat convert raw/ enh.h5 --scheduler local:2",
        "phasefeat convert raw/ enh.h5 --scheduler local:2 --virtual",
        "phasefeat convert /shared/raw /shared/enh.h5 --scheduler tcp://scheduler:8786 --backend cupy",
        "phasefeat convert /shared/raw /shared/enh.h5 --scheduler /shared/scheduler.json",
    ],
    "phasefeat inspect": ["phasefeat inspect enh.h5", "phasefeat inspect enh.h5 --verify --root /data/raw"],
    "phasefeat preview": ["phasefeat preview enh.h5 -o fig.png --per-class 2",
                          "phasefeat preview enh.h5 -o fig.png --index 0 --index 17"],
    "trainer compare": [
        "trainer compare --store enh.h5 --out results/",
        "trainer compare --store enh.h5 --repeats 10 --seed 100 --out results-10/",
        "trainer compare --store enh.h5 --inputs enh --losses cce,scce,focal,weighted_cce,cce_ls --out losses/",
        "trainer compare --store enh.h5 --image-size 64 --width 0.125 --epochs 2 --repeats 2 --out quick/",
        "trainer compare --store enh.h5 --model vgg16,resnet50 --audit --out models/",
        "trainer compare --store enh.h5 --test-source mhh --out external/",
        "trainer compare --store /shared/enh.h5 --scheduler local:8 --gpus-per-run 1 --out /shared/results/",
        "trainer compare --store /shared/enh.h5 --scheduler /shared/scheduler.json --out /shared/results/",
        "trainer compare --store enh.h5 --scheduler local:2 --threads-per-run 1 --width 0.125 --out quick/",
    ],
    "trainer train": ["trainer train --store enh.h5 --input cxr --loss scce --seed 3 --out run/"],
    "trainer evaluate": ["trainer evaluate --model run/model.keras --store enh.h5"],
    "trainer audit": ["trainer audit --store enh.h5 --out audit/",
                      "trainer audit --store enh.h5 --inputs cxr --repeats 5 --occlude-fractions 0.6,0.8,0.9",
                      "trainer audit --store /shared/enh.h5 --scheduler tcp://scheduler:8786 --out /shared/audit/"],
    "trainer explain": ["trainer explain --model cxr/model.keras --model enh/model.keras --store enh.h5"],
}


def groups():
    from phasefeat.cli import cli as phasefeat_cli
    from trainer.cli import cli as trainer_cli

    return {"phasefeat": phasefeat_cli, "trainer": trainer_cli}


def render() -> str:
    lines = ["# Command-line reference", "",
             "Generated from the commands themselves (`python docs/clidoc.py > docs/cli.md`); "
             "a test fails if this file and the code disagree. Every command also answers `--help`.", ""]
    for prog, group in groups().items():
        settings = {**group.context_settings, "terminal_width": 100, "max_content_width": 100}
        with click.Context(group, info_name=prog, **settings) as ctx:
            lines += [f"## `{prog}`", "", "```text", group.get_help(ctx), "```", ""]
            for name in sorted(group.commands):
                command = group.commands[name]
                with click.Context(command, info_name=name, parent=ctx, terminal_width=100,
                                   max_content_width=100) as sub:
                    lines += [f"### `{prog} {name}`", "", "```text", command.get_help(sub), "```", ""]
                examples = EXAMPLES.get(f"{prog} {name}", [])
                if examples:
                    lines += ["Examples:", "", "```bash", *examples, "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
