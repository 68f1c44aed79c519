"""The Statistics view: the paper's Fig. 2 as plotly figures, for all users or one."""
from __future__ import annotations

from dataclasses import dataclass, field

import plotly.express as px
import plotly.graph_objects as go

from pss.api import DatasetStatistics, Workspace, dataset_statistics, list_users
from pss.errors import DatasetError

ALL_USERS = "all users"
_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10), height=380)


@dataclass
class StatisticsFigures:
    """The four Fig. 2 charts and any problems met while computing them (unreadable masks, bad tags)."""

    proportion: go.Figure
    cooccurrence: go.Figure
    object_size: go.Figure
    instances: go.Figure
    users: list[str]
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"statistics of {', '.join(self.users)}"
        if self.problems:
            shown = "; ".join(self.problems[:5])
            more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            text += f"  \n⚠ {len(self.problems)} problem(s) skipped: {shown}{more}"
        return text


def scope_choices(ws: Workspace) -> list[str]:
    """``"all users"`` then each user."""
    return [ALL_USERS, *list_users(ws)]


def _users_for(ws: Workspace, scope: str | None) -> list[str]:
    users = list_users(ws)
    if scope in (None, "", ALL_USERS):
        return users
    if scope not in users:
        raise DatasetError(f"unknown user {scope!r}; known users: {', '.join(users)}")
    return [scope]


def proportion_figure(stats: DatasetStatistics) -> go.Figure:
    """Fig. 2(a): per class, the share of each user's images tagged with it (grouped bars, one colour per user)."""
    frame = stats.class_proportion.assign(percent=lambda f: 100 * f["proportion"])
    figure = px.bar(frame, x="class_name", y="percent", color="user", barmode="group",
                    hover_data={"images": True, "total_images": True, "percent": ":.1f"},
                    labels={"class_name": "class", "percent": "% of the user's images"})
    figure.update_layout(title="Class proportion per user (% of images tagged with the class)", **_LAYOUT)
    return figure


def cooccurrence_figure(stats: DatasetStatistics) -> go.Figure:
    """Fig. 2(b): P(tagged j | tagged i) as a heat map; hover shows the image counts."""
    counts = stats.cooccurrence
    diagonal = counts.to_numpy().diagonal().astype(float)
    conditional = counts.to_numpy() / diagonal.clip(min=1)[:, None]
    figure = go.Figure(go.Heatmap(
        z=conditional, x=list(counts.columns), y=list(counts.index), customdata=counts.to_numpy(),
        colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="P(j | i)"),
        hovertemplate="%{y} → %{x}<br>P = %{z:.2f}<br>%{customdata} images with both<extra></extra>"))
    figure.update_layout(title="Class co-occurrence: P(image tagged with column | tagged with row)",
                         yaxis=dict(autorange="reversed"), **{**_LAYOUT, "height": 520})
    return figure


def object_size_figure(stats: DatasetStatistics) -> go.Figure:
    """Fig. 2(c): mean fraction of the image covered by each class, over labelled masks containing it."""
    frame = stats.object_size.assign(percent=lambda f: 100 * f["mean_fraction"]).fillna({"percent": 0.0})
    figure = px.bar(frame, x="class_name", y="percent", hover_data={"images": True, "percent": ":.1f"},
                    labels={"class_name": "class", "percent": "mean % of image area"})
    figure.update_traces(marker_color="#2ca02c")
    figure.update_layout(title="Mean object size per class (labelled masks)", **_LAYOUT)
    return figure


def instances_figure(stats: DatasetStatistics) -> go.Figure:
    """Fig. 2(d): connected components per class over the labelled masks."""
    figure = px.bar(stats.instances, x="class_name", y="instances", hover_data={"images": True},
                    labels={"class_name": "class", "instances": "instances (connected regions)"})
    figure.update_traces(marker_color="#d62728")
    figure.update_layout(title="Instances per class (labelled masks)", **_LAYOUT)
    return figure


def statistics_figures(ws: Workspace, scope: str | None = ALL_USERS) -> StatisticsFigures:
    """All four charts for ``scope`` (``"all users"`` or one user name)."""
    users = _users_for(ws, scope)
    stats = dataset_statistics(ws, users)
    # a broken user is named first: its charts are missing, the others' are shown
    problems: list[str] = [f"user {user} left out: {why}" for user, why in stats.broken_users.items()]
    for frame in (stats.class_proportion, stats.cooccurrence, stats.object_size, stats.instances):
        for problem in frame.attrs.get("problems", []):
            if problem not in problems:
                problems.append(problem)
    return StatisticsFigures(proportion_figure(stats), cooccurrence_figure(stats), object_size_figure(stats),
                             instances_figure(stats), users=stats.users, problems=problems)
