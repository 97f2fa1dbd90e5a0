"""Seaborn figures written as PNG files beside the report; every band or bar is the mean
over seeds with its 95% t interval (the same interval as the tables)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .frame import long_history, series  # noqa: E402
from .section import Figure  # noqa: E402
from .stats import band  # noqa: E402

DPI = 100  # 100 dpi at these sizes: sharp on screen, small files
BAND = "band = mean over seeds with its 95% t interval (of log10 values on log axes)"


class FigureMaker:
    """Draws figures into `<out>/figures/`; with out=None it draws nothing (table-only builds). `tag` is appended to
    every file name, so the sections of several results sources keep their own figures."""

    def __init__(self, out: str | Path | None, tag: str = ""):
        self.tag = tag
        self.dir = Path(out) / "figures" if out is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        sns.set_theme(style="whitegrid", context="notebook", palette="colorblind", font_scale=0.9)

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def save(self, fig, name: str, title: str, caption: str) -> Figure:
        """Title, lay out and write `fig` as figures/<name>.png; the Figure the section lists."""
        fig.suptitle(title, fontsize=12, fontweight="bold")
        fig.tight_layout()
        file = f"{name}-{self.tag}.png" if self.tag else f"{name}.png"
        fig.savefig(self.dir / file, dpi=DPI)
        width = int(fig.get_size_inches()[0] * DPI)
        plt.close(fig)
        return Figure(f"figures/{file}", title, caption, width)

    # ------------------------------------------------------------------ curves over epochs
    def curves(
        self,
        name: str,
        title: str,
        runs: pd.DataFrame,
        panels: list[tuple[str, str]],
        hue: str = "arm",
        logy: bool = False,
        first_epoch: int = 0,
        caption: str = "",
        hue_order: list[str] | None = None,
    ) -> Figure | None:
        """One panel per (metric, y label): metric over epochs, a line and band per `hue`."""
        if not self.enabled or runs.empty:
            return None
        data = long_history(runs, [m for m, _ in panels], by=hue)
        data = data[(data["epoch"] >= first_epoch) & np.isfinite(data["value"].astype(float))]
        if data.empty:
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.6, 3.8), squeeze=False)
        order = hue_order or list(dict.fromkeys(runs[hue]))
        for ax, (metric, ylabel) in zip(axes[0], panels):
            sub = data[data["metric"] == metric]
            pos = sub["value"][sub["value"] > 0]
            wide = metric.endswith("loss") and len(pos) == len(sub) and len(pos) and pos.max() > 20 * pos.min()
            log = logy or wide  # losses spanning decades read better on a log axis
            if log:
                sub = _to_log(sub)
            sns.lineplot(
                sub,
                x="epoch",
                y="value",
                hue=hue,
                hue_order=order,
                errorbar=band,
                marker="o",
                markersize=4,
                ax=ax,
                legend=ax is axes[0][-1],
            )
            ax.set(xlabel="epoch", ylabel=ylabel)
            if log:
                _log_ticks(ax)
            ax.xaxis.get_major_locator().set_params(integer=True)
        legend_outside(axes[0][-1], hue)
        return self.save(fig, name, title, caption or BAND)

    # ------------------------------------------------------------------ per-layer profiles
    def layer_profile(
        self,
        name: str,
        title: str,
        runs: pd.DataFrame,
        layer_names: list[str],
        stat: str,
        ylabel: str,
        hue: str = "arm",
        epochs: tuple[int, ...] = (0, -1),
        logy: bool = True,
        caption: str = "",
    ) -> Figure | None:
        """`stat` per layer (x = layer index) at each epoch in `epochs` (0 = init, -1 = last), one panel each."""
        if not self.enabled or runs.empty or not layer_names:
            return None
        rows = []
        for _, r in runs.iterrows():
            for i, layer in enumerate(layer_names, 1):
                vals = series(r, f"{layer}.{stat}")
                for e in epochs:
                    if vals and (e < 0 or e < len(vals)):
                        rows.append((r[hue], i, "at initialisation" if e == 0 else "after training", vals[e]))
        data = pd.DataFrame(rows, columns=[hue, "layer", "when", "value"])
        data = data[np.isfinite(data["value"])]
        data = _to_log(data) if logy else data
        if data.empty:
            return None
        whens = list(dict.fromkeys(data["when"]))
        fig, axes = plt.subplots(1, len(whens), figsize=(4.8 * len(whens) + 1.6, 3.8), squeeze=False, sharey=True)
        order = list(dict.fromkeys(runs[hue]))
        for ax, when in zip(axes[0], whens):
            sns.lineplot(
                data[data["when"] == when],
                x="layer",
                y="value",
                hue=hue,
                hue_order=order,
                errorbar=band,
                marker="o",
                markersize=4,
                ax=ax,
                legend=ax is axes[0][-1],
            )
            ax.set(title=when, xlabel="layer (input → output)", ylabel=ylabel)
            if logy:
                _log_ticks(ax)
            ax.xaxis.get_major_locator().set_params(integer=True)
        legend_outside(axes[0][-1], hue)
        return self.save(fig, name, title, caption or BAND)

    def histograms(
        self,
        name: str,
        title: str,
        runs: pd.DataFrame,
        arms: list[str],
        layer_names: list[str],
        when: str = "init",
        caption: str = "",
    ) -> Figure | None:
        """CS231n-style grid: one row per arm (its first seed), one column per layer, activation histograms."""
        if not self.enabled or runs.empty or not layer_names:
            return None
        shown = [a for a in arms if (runs["arm"] == a).any()]
        picks = np.linspace(0, len(layer_names) - 1, min(10, len(layer_names))).round().astype(int)  # at most 10 columns
        cols = [layer_names[i] for i in picks]
        if not shown:
            return None
        fig, axes = plt.subplots(
            len(shown), len(cols), figsize=(1.45 * len(cols) + 1.2, 1.35 * len(shown) + 0.9), squeeze=False, sharey="row"
        )
        for i, arm in enumerate(shown):
            row = runs[runs["arm"] == arm].sort_values("seed").iloc[0]
            hists = {layer: _hist(row, f"{when}.{layer}") for layer in cols}
            spans = [(e[0], e[-1]) for e, _ in hists.values() if len(e)]
            lo, hi = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0.0, 1.0)
            for j, layer in enumerate(cols):
                ax = axes[i][j]
                edges, counts = hists[layer]
                colour = sns.color_palette()[i % 10]
                if len(edges) and edges[-1] - edges[0] < 0.02 * (hi - lo):  # narrower than a pixel: draw the spike
                    ax.bar((edges[0] + edges[-1]) / 2, 1.0, width=0.02 * (hi - lo), color=colour, alpha=0.85)
                elif len(edges):
                    ax.stairs(counts / max(counts.sum(), 1), edges, fill=True, alpha=0.85, color=colour)
                pad = 0.04 * (hi - lo)  # a spike at the range edge stays visible
                ax.set_xlim(lo - pad, hi + pad)  # one x range per row: a shrinking or growing scale shows, as in the lecture
                ax.set_xticks([lo, hi], [f"{lo:.2g}", f"{hi:.2g}"])
                ax.tick_params(labelsize=6)
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(layer, fontsize=8)
                if j == 0:
                    ax.set_ylabel(_short(arm, shown), fontsize=8, rotation=0, ha="right", va="center")
        return self.save(
            fig,
            name,
            title,
            caption
            or "fraction of probe-batch activations per bin (first seed of each arm); "
            "x: activation value, one range per row so a shrinking or exploding scale shows",
        )

    # ------------------------------------------------------------------ points, bars, scatter
    def points(
        self,
        name: str,
        title: str,
        data: pd.DataFrame,
        x: str,
        y: str,
        ylabel: str,
        hue: str | None = None,
        col: str | None = None,
        logy: bool = False,
        caption: str = "",
        order: list | None = None,
        join: bool = False,
        sharey: bool = True,
    ) -> Figure | None:
        """Mean and 95% t interval of y over seeds at each x (one panel per `col` value); join=True draws
        lines between x values (for ordered x such as depth or learning rate)."""
        if not self.enabled or data.empty:
            return None
        data = data[np.isfinite(data[y].astype(float))]
        if data.empty:
            return None
        panels = list(dict.fromkeys(data[col])) if col else [None]
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(max(4.6, 0.55 * data[x].nunique() + 2.6) * len(panels) + 1.4, 3.9),
            squeeze=False,
            sharey=sharey,
        )
        for ax, panel in zip(axes[0], panels):
            sub = data if panel is None else data[data[col] == panel]
            dodge = 0.3 if hue and sub[hue].nunique() > 1 else False  # seaborn divides by (levels - 1)
            sns.pointplot(
                sub,
                x=x,
                y=y,
                hue=hue,
                order=order,
                errorbar=band,
                dodge=dodge,
                capsize=0.1,
                markersize=5,
                linestyle="-" if join else "none",
                ax=ax,
                legend=bool(hue) and ax is axes[0][-1],
            )
            ax.set(ylabel=ylabel, title=str(panel) if panel is not None else "", yscale="log" if logy else "linear")
            ax.tick_params(axis="x", rotation=30 if data[x].astype(str).str.len().max() > 6 else 0)
        if hue:
            legend_outside(axes[0][-1], hue)
        return self.save(fig, name, title, caption or "points: mean over seeds; bars: 95% t interval")

    def scatter(
        self,
        name: str,
        title: str,
        data: pd.DataFrame,
        x: str,
        y: str,
        xlabel: str,
        ylabel: str,
        hue: str | None = None,
        logx: bool = False,
        logy: bool = False,
        caption: str = "",
        lines: bool = False,
    ) -> Figure | None:
        if not self.enabled or data.empty:
            return None
        ok = np.isfinite(data[x].astype(float)) & np.isfinite(data[y].astype(float))
        ok &= (data[x] > 0 if logx else True) & (data[y] > 0 if logy else True)
        data = data[ok]
        if data.empty:
            return None
        fig, ax = plt.subplots(figsize=(6.6, 4.0))
        plot = sns.lineplot if lines else sns.scatterplot
        kwargs = dict(marker="o", errorbar=band) if lines else dict(s=28, alpha=0.8)
        plot(data, x=x, y=y, hue=hue, ax=ax, **kwargs)
        ax.set(xlabel=xlabel, ylabel=ylabel, xscale="log" if logx else "linear", yscale="log" if logy else "linear")
        if hue:
            legend_outside(ax, hue)
        return self.save(fig, name, title, caption)

    def versus(
        self,
        name: str,
        title: str,
        data: pd.DataFrame,
        x: str,
        xlabel: str,
        hue: str | None = None,
        logx: bool = False,
        refs: pd.DataFrame | None = None,
        caption: str = "",
        hue_order: list[str] | None = None,
        ylabel: str | None = None,
    ) -> Figure | None:
        """One panel per `metric` of long `data` (columns x, [hue], metric, value): mean and 95% t interval over
        seeds at each numeric x, joined by lines. The panel's y label is its metric, or `ylabel` with the metric as
        the panel's title. `refs` (columns metric, label, value) draws labelled horizontal reference lines."""
        if not self.enabled or data.empty:
            return None
        data = data[np.isfinite(data["value"].astype(float))]
        if data.empty:
            return None
        ticks = sorted(set(data[x]))
        panels = list(dict.fromkeys(data["metric"]))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.8, 3.9), squeeze=False)
        order = hue_order or (list(dict.fromkeys(data[hue])) if hue else None)
        if hue and len(order) > 1:  # nudge hues apart so equal values stay visible
            if logx and data[x].min() > 0:
                span = max(np.log10(data[x].max() / data[x].min()), 1.0)
                shift = {h: 10 ** ((i - (len(order) - 1) / 2) * 0.012 * span) for i, h in enumerate(order)}
                data = data.assign(**{x: data[x] * data[hue].map(shift).fillna(1.0)})
            elif not logx:
                span = float(data[x].max() - data[x].min()) or 1.0
                shift = {h: (i - (len(order) - 1) / 2) * 0.012 * span for i, h in enumerate(order)}
                data = data.assign(**{x: data[x] + data[hue].map(shift).fillna(0.0)})
        for ax, metric in zip(axes[0], panels):
            sub = data[data["metric"] == metric]
            sns.lineplot(
                sub,
                x=x,
                y="value",
                hue=hue,
                hue_order=order,
                errorbar=band,
                err_style="bars",
                marker="o",
                markersize=5,
                err_kws={"capsize": 3},
                ax=ax,
                legend=bool(hue) and ax is axes[0][-1],
            )
            for i, (_, ref) in enumerate(refs[refs["metric"] == metric].iterrows() if refs is not None else []):
                ax.axhline(ref["value"], color="0.35", linestyle=("--", ":", "-.")[i % 3], linewidth=1.2)
                ax.annotate(
                    ref["label"], (0.01, ref["value"]), xycoords=("axes fraction", "data"), fontsize=7, color="0.3", va="bottom"
                )
            ax.set(xlabel=xlabel, ylabel=ylabel or metric, title=metric if ylabel else "")
            if not logx:
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            if logx:
                ax.set_xscale("log", base=2 if sub[x].min() >= 1 else 10)
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                ax.minorticks_off()
        if hue:
            legend_outside(axes[0][-1], hue)
        return self.save(fig, name, title, caption or "points: mean over seeds; bars: 95% t interval")


def _hist(row: pd.Series, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of a recorded histogram, or two empty arrays."""
    edges, counts = row.get(f"{key}.hist_edges"), row.get(f"{key}.hist_counts")
    if isinstance(edges, list) and isinstance(counts, list) and len(edges) == len(counts) + 1 and counts:
        return np.asarray(edges, float), np.asarray(counts, float)
    return np.array([]), np.array([])


def _to_log(data: pd.DataFrame) -> pd.DataFrame:
    """Positive values as log10: bands on a log axis are then intervals of log10 (geometric means),
    which never cross zero."""
    data = data[data["value"] > 0]
    return data.assign(value=np.log10(data["value"].astype(float)))


def _log_ticks(ax) -> None:
    """Label a log10-valued axis as powers of ten."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{v:g}}}$"))


def _short(arm: str, arms: list[str]) -> str:
    """The arm name without the factor levels all `arms` share ("he+tanh+d10" -> "he")."""
    common = set.intersection(*(set(a.split("+")) for a in arms)) if len(arms) > 1 else set()
    return "+".join(p for p in arm.split("+") if p not in common) or arm


def legend_outside(ax, title: str) -> None:
    """Move the axis' legend to the right of the plot, titled by the factor's name."""
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title=title.replace("factor.", ""), frameon=False)
