"""Pool the test scores of several folds of a low-shot benchmark (leave one volume, subject or
scene out, once for each; or one configuration pretrained with several seeds) into one table and
verdict: every fold's repeats, paired. A second verdict takes the fold as the unit, so that its
interval covers what differs between folds (subjects, pretraining seeds).

    python benchmarks/lowshot_folds.py lung1:runs/ct-s8/test/none-long-all \\
        lung2:runs/ct-lesion-lung1/test/none --out runs/ct-folds
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lowshot import eval_dir, summary

from domainclust.evaluation.lowshot.folds import judge_over_folds, pool_folds
from domainclust.evaluation.lowshot.result import load_lowshot
from domainclust.evaluation.results import write_finetune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folds", nargs="+", metavar="NAME:RUN",
                    help="a fold's name (e.g. its held-out volume) and its scored run")
    ap.add_argument("--protocol", default="linear")
    ap.add_argument("--out", type=Path, help="also write the pooled finetune.json here")
    args = ap.parse_args()
    names, results = [], []
    for item in args.folds:
        name, _, run = item.partition(":")
        path = eval_dir(Path(run), args.protocol) / "finetune.json"
        result = load_lowshot(path)
        if result is None:
            raise SystemExit(f"{path}: no such result (score the fold first)")
        names.append(name)
        results.append(result)
    pooled = pool_folds(results, names=names)
    over_folds = dataclasses.replace(pooled, verdict=judge_over_folds(pooled))
    print(summary({f"{' + '.join(names)} pooled": pooled.to_dict(),
                   f"over the {len(names)} folds": over_folds.to_dict()}))
    if args.out:
        write_finetune(pooled, args.out)


if __name__ == "__main__":
    main()
