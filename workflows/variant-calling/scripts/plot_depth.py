"""Draw the read depth of every sample along every region, with the called variants.

Reads the table of `samtools depth -a -H` (one column per BAM, in the order the
samples are given) and the VCF of `bcftools call`, and writes one PNG with one
panel per reference sequence. Needs only the standard library and matplotlib.
"""

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Depths = dict[str, tuple[list[int], list[list[int]]]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=Path, required=True, help="samtools depth TSV")
    parser.add_argument("--vcf", type=Path, required=True, help="VCF of the calls")
    parser.add_argument("--samples", nargs="+", required=True, help="column labels")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    return parser.parse_args(argv)


def read_depths(path: Path, samples: list[str]) -> Depths:
    """Return, per sequence, the positions and one depth list per sample."""
    positions: dict[str, list[int]] = defaultdict(list)
    depths: dict[str, list[list[int]]] = {}
    with path.open(newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if row[0].startswith("#"):
                check_columns(path, row, samples)
                continue
            chrom, pos, values = row[0], int(row[1]), row[2:]
            positions[chrom].append(pos)
            per_sample = depths.setdefault(chrom, [[] for _ in samples])
            for column, value in zip(per_sample, values, strict=True):
                column.append(int(value))
    if not positions:
        sys.exit(f"{path}: no depth rows; expected the output of samtools depth -a")
    return {chrom: (positions[chrom], depths[chrom]) for chrom in positions}


def check_columns(path: Path, header: list[str], samples: list[str]) -> None:
    found = len(header) - 2
    if found != len(samples):
        sys.exit(
            f"{path}: {found} depth columns but {len(samples)} samples given "
            f"({' '.join(samples)}); pass one --samples label per BAM, in order"
        )


def read_variant_positions(path: Path) -> dict[str, list[int]]:
    variants: dict[str, list[int]] = defaultdict(list)
    with path.open() as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            chrom, pos = line.split("\t", 2)[:2]
            variants[chrom].append(int(pos))
    return variants


def draw(depths: Depths, variants: dict[str, list[int]], samples: list[str]) -> Figure:
    figure, axes = plt.subplots(len(depths), 1, figsize=(10, 3.2 * len(depths)))
    axes = [axes] if len(depths) == 1 else list(axes)
    for axis, chrom in zip(axes, depths, strict=True):
        positions, per_sample = depths[chrom]
        for label, column in zip(samples, per_sample, strict=True):
            axis.plot(positions, column, linewidth=0.8, label=label)
        for pos in variants.get(chrom, []):
            axis.axvline(pos, color="grey", linestyle=":", linewidth=0.8)
        count = len(variants.get(chrom, []))
        axis.set_title(f"{chrom}: depth per sample, {count} variant sites (dotted)")
        axis.set_xlabel(f"position on {chrom}")
        axis.set_ylabel("read depth")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return figure


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    depths = read_depths(args.depth, args.samples)
    variants = read_variant_positions(args.vcf)
    figure = draw(depths, variants, args.samples)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=100)
    total = sum(len(sites) for sites in variants.values())
    print(f"wrote {args.output}: {len(depths)} regions, {total} variant sites")


if __name__ == "__main__":
    main(sys.argv[1:])
