"""The registry of TMS clusters: configured server-side, named by id from clients."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from server.config import ConfigError
from server.errors import BadRequest

CLUSTER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Cluster:
    """One upstream cluster. The service token is read from the environment, never from a user."""

    id: str
    name: str
    base_url: str
    service_token: str | None = None

    def __repr__(self) -> str:  # keeps the token out of logs
        return f"Cluster(id={self.id!r}, base_url={self.base_url!r})"

    def public(self) -> dict:
        """What clients may see of it."""
        return {"id": self.id, "name": self.name}


class ClusterRegistry:
    """Looks clusters up by id; an unknown id is a 400 naming the known ones."""

    def __init__(self, clusters: list[Cluster]):
        self._by_id = {cluster.id: cluster for cluster in clusters}

    def __iter__(self):
        return iter(self._by_id.values())

    def get(self, cluster_id: object) -> Cluster:
        cluster = self._by_id.get(cluster_id) if isinstance(cluster_id, str) else None
        if cluster is None:
            shown = cluster_id if isinstance(cluster_id, str) and len(cluster_id) <= 64 else "(invalid)"
            raise BadRequest(
                f"Unknown cluster {shown!r}. Known clusters: " + ", ".join(self._by_id),
                code="unknown_cluster",
                details={"valid_clusters": list(self._by_id)},
            )
        return cluster


def load_clusters_file(path: str, environ: Mapping[str, str] | None = None) -> list[Cluster]:
    """Read `[{"id", "name", "base_url", "token_env"?}, ...]` from a JSON file."""
    env = os.environ if environ is None else environ
    where = f"JOBMON_CLUSTERS_FILE={path!r}"
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read it as JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: expected a non-empty JSON list of clusters")
    clusters = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: entry {index} is not an object")
        cluster_id, base_url = entry.get("id"), entry.get("base_url")
        if not isinstance(cluster_id, str) or not CLUSTER_ID.fullmatch(cluster_id):
            raise ConfigError(f"{where}: entry {index} needs an 'id' of lowercase letters, digits, - or _")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: cluster {cluster_id!r} needs a 'base_url' starting with http(s)://")
        token_env = entry.get("token_env")
        token = env.get(token_env) if isinstance(token_env, str) else None
        clusters.append(Cluster(cluster_id, str(entry.get("name") or cluster_id), base_url.rstrip("/"), token))
    return clusters
