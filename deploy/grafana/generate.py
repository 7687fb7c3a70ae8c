#!/usr/bin/env python3
"""Writes the Grafana dashboards of tessera (deploy/grafana/*.json).

The JSON files are checked in so they can be imported as they are
(Grafana: Dashboards > New > Import, or a provisioning directory); this
script is their source. Edit it, run `deploy/grafana/generate.py`, and
commit both; `deploy/check` fails when the files differ from its output.

Every dashboard has a `datasource` variable (any Prometheus data source)
and filters by job: tessera-directory, tessera-store, tessera-router (the
jobs of deploy/prometheus/prometheus.yml).
"""

import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr, legend="", ref="A"):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self):
        self.x, self.y, self.row_h, self.next_id = 0, 0, 0, 1

    def place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.next_id += 1
        return pos, self.next_id - 1

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": 0, "y": self.y, "w": 24, "h": 1}
        self.y += 1
        self.next_id += 1
        return {"type": "row", "title": title, "id": self.next_id - 1,
                "gridPos": pos, "collapsed": False, "panels": []}


def timeseries(lay, title, targets, unit="short", w=12, h=8, desc="", stack=False):
    pos, pid = lay.place(w, h)
    return {
        "type": "timeseries", "id": pid, "title": title, "description": desc,
        "datasource": DS, "gridPos": pos,
        "targets": [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                           "stacking": {"mode": "normal" if stack else "none"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi"}},
    }


def stat(lay, title, expr, unit="short", w=4, h=4, desc="", thresholds=None):
    pos, pid = lay.place(w, h)
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat", "id": pid, "title": title, "description": desc,
        "datasource": DS, "gridPos": pos, "targets": [target(expr)],
        "fieldConfig": {"defaults": {"unit": unit,
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none"},
    }


def red_if(op, value):
    """Thresholds: green, red when the value is `op` value."""
    if op == "<":
        return [{"color": "red", "value": None}, {"color": "green", "value": value}]
    return [{"color": "green", "value": None}, {"color": "red", "value": value}]


def quantiles(metric, sel, by, qs=(0.5, 0.99)):
    return [(f'histogram_quantile({q}, sum by (le{", " + by if by else ""}) '
             f'(rate({metric}_bucket{{{sel}}}[$__rate_interval])))',
             f'p{int(q * 100)}' + (f" {{{{{by}}}}}" if by else ""))
            for q in qs]


def variables(job=None):
    out = [{
        "name": "datasource", "label": "Data source", "type": "datasource",
        "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
        "regex": "", "options": [],
    }]
    if job:
        out.append({
            "name": "instance", "label": "Instance", "type": "query",
            "datasource": DS,
            "query": {"query": f'label_values(tessera_ready{{job="{job}"}}, instance)',
                      "refId": "instance"},
            "definition": f'label_values(tessera_ready{{job="{job}"}}, instance)',
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0, "sort": 1, "options": [], "regex": "",
        })
    return out


def dashboard(uid, title, desc, panels, job=None):
    return {
        "uid": uid, "title": title, "description": desc,
        "tags": ["tessera"], "timezone": "", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "graphTooltip": 1,
        "templating": {"list": variables(job)},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["tessera"], "title": "tessera",
                   "asDropdown": True, "includeVars": True, "keepTime": True}],
        "panels": panels,
    }


# Leader-only gauges of the directory: a former leader keeps its last
# values, so take them from the member that leads now.
def on_leader(expr):
    return f"({expr}) and on (instance) (tessera_directory_is_leader == 1)"


def overview():
    lay, p = Layout(), []
    p.append(lay.row("Health"))
    p.append(stat(lay, "Directory leader", "sum(tessera_directory_is_leader) or vector(0)",
                  desc="1 while a directory member leads (the directory has a quorum).",
                  thresholds=red_if("<", 1)))
    p.append(stat(lay, "Regions", f"max({on_leader('tessera_directory_regions')})"))
    p.append(stat(lay, "Regions without a leader",
                  f"max({on_leader('tessera_directory_regions')}) - "
                  '(sum(tessera_leaders{job="tessera-store"}) or vector(0))',
                  desc="Regions the directory knows minus regions led by some store.",
                  thresholds=red_if(">=", 1)))
    up = on_leader('tessera_directory_stores{state="up"}')
    down = on_leader('tessera_directory_stores{state="down"}')
    p.append(stat(lay, "Stores up", f"max({up})"))
    p.append(stat(lay, "Stores down", f"max({down})", thresholds=red_if(">=", 1)))
    p.append(stat(lay, "Processes not ready", "count(tessera_ready == 0) or vector(0)",
                  desc="tessera processes answering 503 on /ready.",
                  thresholds=red_if(">=", 1)))
    p.append(timeseries(lay, "Stores by state",
                        [(f"max by (state) ({on_leader('tessera_directory_stores')})", "{{state}}")],
                        stack=True))
    p.append(timeseries(lay, "Ready processes by job",
                        [("sum by (job) (tessera_ready)", "{{job}}")]))
    p.append(lay.row("Traffic (routers)"))
    p.append(timeseries(lay, "Requests by operation",
                        [("sum by (op) (rate(tessera_router_requests_total[$__rate_interval]))",
                          "{{op}}")], unit="reqps"))
    p.append(timeseries(lay, "Failed requests",
                        [('sum(rate(tessera_router_requests_total{outcome="error"}[$__rate_interval])) '
                          "/ sum(rate(tessera_router_requests_total[$__rate_interval]))",
                          "errors")], unit="percentunit"))
    p.append(timeseries(lay, "Request latency (all operations)",
                        quantiles("tessera_router_request_seconds", "", ""), unit="s"))
    p.append(timeseries(lay, "Router retries by reason",
                        [("sum by (reason) (rate(tessera_router_retries_total[$__rate_interval]))",
                          "{{reason}}")], unit="ops"))
    p.append(lay.row("Placement"))
    p.append(timeseries(lay, "Regions per store",
                        [('tessera_regions{job="tessera-store"}', "{{instance}}")]))
    p.append(timeseries(lay, "Leaders per store",
                        [('tessera_leaders{job="tessera-store"}', "{{instance}}")]))
    p.append(timeseries(lay, "Operators by outcome",
                        [("sum by (outcome) (rate(tessera_directory_operators_total[$__rate_interval]))",
                          "{{outcome}}")], unit="ops"))
    p.append(timeseries(lay, "Store fsync p99",
                        quantiles("tessera_fsync_seconds", 'job="tessera-store"', "instance", (0.99,)),
                        unit="s"))
    return dashboard("tessera-overview", "tessera / Cluster overview",
                     "The whole cluster: directory quorum, stores, regions, client traffic.", p)


def store():
    lay, p = Layout(), []
    sel = 'job="tessera-store", instance=~"$instance"'
    p.append(lay.row("Regions"))
    p.append(timeseries(lay, "Regions", [(f"tessera_regions{{{sel}}}", "{{instance}}")], w=8))
    p.append(timeseries(lay, "Leaders", [(f"tessera_leaders{{{sel}}}", "{{instance}}")], w=8))
    p.append(timeseries(lay, "Ready", [(f"tessera_ready{{{sel}}}", "{{instance}}")], w=8))
    p.append(timeseries(lay, "Hibernating regions", [
        (f"tessera_raft_hibernating_regions{{{sel}}}", "{{instance}}"),
    ], desc="Peers that do not tick: their region was idle, every replica agreed to sleep."))
    p.append(timeseries(lay, "Region wake-ups", [
        (f"sum by (instance) (rate(tessera_raft_region_wakeups_total{{{sel}}}[$__rate_interval]))",
         "{{instance}}"),
    ], unit="ops", desc="Hibernating peers woken by a request, a message or a silent leader store."))
    p.append(timeseries(lay, "Splits, merges, membership changes, log GC", [
        (f"sum by (instance) (rate(tessera_splits_total{{{sel}}}[$__rate_interval]))", "splits {{instance}}"),
        (f"sum by (instance, outcome) (rate(tessera_merges_total{{{sel}}}[$__rate_interval]))",
         "merges {{outcome}} {{instance}}"),
        (f"sum by (instance) (rate(tessera_conf_changes_total{{{sel}}}[$__rate_interval]))",
         "conf changes {{instance}}"),
        (f"sum by (instance) (rate(tessera_raft_log_gc_total{{{sel}}}[$__rate_interval]))", "log GC {{instance}}"),
    ], unit="ops"))
    p.append(timeseries(lay, "Raft log kept", [
        (f"tessera_raft_log_entries{{{sel}}}", "entries {{instance}}"),
        (f"rate(tessera_raft_log_gc_entries_total{{{sel}}}[$__rate_interval])",
         "entries dropped/s {{instance}}"),
    ]))
    p.append(timeseries(lay, "Raft log bytes", [(f"tessera_raft_log_bytes{{{sel}}}", "{{instance}}")],
                        unit="bytes"))
    p.append(lay.row("Writes and reads"))
    p.append(timeseries(lay, "Proposals and applied entries", [
        (f"sum by (instance) (rate(tessera_proposals_total{{{sel}}}[$__rate_interval]))", "proposals {{instance}}"),
        (f"sum by (instance) (rate(tessera_applied_entries_total{{{sel}}}[$__rate_interval]))",
         "applied {{instance}}"),
    ], unit="ops"))
    p.append(timeseries(lay, "Reads by path", [
        (f"sum by (instance, path) (rate(tessera_reads_total{{{sel}}}[$__rate_interval]))",
         "{{path}} {{instance}}"),
    ], unit="ops", desc="lease: served on the leader's lease; read_index: a ReadIndex round trip."))
    p.append(timeseries(lay, "Keys served", [
        (f"sum by (instance, op) (rate(tessera_kv_served_keys_total{{{sel}}}[$__rate_interval]))",
         "{{op}} {{instance}}"),
    ], unit="ops", desc="Keys read and proposed for clients: the load the directory's hot-leader rule "
                        "balances across stores."))
    p.append(timeseries(lay, "Bytes served", [
        (f"sum by (instance, op) (rate(tessera_kv_served_bytes_total{{{sel}}}[$__rate_interval]))",
         "{{op}} {{instance}}"),
    ], unit="Bps", desc="Bytes of keys and values read and proposed for clients."))
    p.append(lay.row("Group commit"))
    p.append(timeseries(lay, "fsync", quantiles("tessera_fsync_seconds", sel, "instance"), unit="s",
                        desc="One synced write batch (the fsync of a group commit)."))
    p.append(timeseries(lay, "Poller round", quantiles("tessera_poller_round_seconds", sel, "instance"),
                        unit="s"))
    p.append(timeseries(lay, "Regions per write batch", [
        (f"sum by (instance) (rate(tessera_raft_write_batch_regions_sum{{{sel}}}[$__rate_interval])) "
         f"/ sum by (instance) (rate(tessera_raft_write_batch_regions_count{{{sel}}}[$__rate_interval]))",
         "{{instance}}"),
    ], desc="How many regions share one fsync, on average."))
    p.append(timeseries(lay, "Write batch size", quantiles("tessera_raft_write_batch_bytes", sel, "instance"),
                        unit="bytes"))
    p.append(lay.row("Raft messages and snapshots"))
    p.append(timeseries(lay, "Raft messages", [
        (f"sum by (instance) (rate(tessera_raft_messages_sent_total{{{sel}}}[$__rate_interval]))",
         "sent {{instance}}"),
        (f"sum by (instance) (rate(tessera_raft_messages_received_total{{{sel}}}[$__rate_interval]))",
         "received {{instance}}"),
    ], unit="ops"))
    p.append(timeseries(lay, "Snapshots", [
        (f"sum by (instance) (rate(tessera_snapshots_generated_total{{{sel}}}[$__rate_interval]))",
         "generated {{instance}}"),
        (f"sum by (instance) (rate(tessera_snapshots_sent_total{{{sel}}}[$__rate_interval]))", "sent {{instance}}"),
        (f"sum by (instance) (rate(tessera_snapshots_received_total{{{sel}}}[$__rate_interval]))",
         "received {{instance}}"),
        (f"sum by (instance) (rate(tessera_snapshots_applied_total{{{sel}}}[$__rate_interval]))",
         "applied {{instance}}"),
    ], unit="ops"))
    p.append(timeseries(lay, "Snapshot bytes", [
        (f"sum by (instance) (rate(tessera_snapshot_sent_bytes_total{{{sel}}}[$__rate_interval]))",
         "sent {{instance}}"),
        (f"sum by (instance) (rate(tessera_snapshot_received_bytes_total{{{sel}}}[$__rate_interval]))",
         "received {{instance}}"),
    ], unit="Bps"))
    p.append(timeseries(lay, "Snapshot durations (p99)", [
        (f"histogram_quantile(0.99, sum by (le) (rate(tessera_snapshot_{m}_seconds_bucket{{{sel}}}"
         f"[$__rate_interval])))", m)
        for m in ("generate", "send", "receive", "apply")
    ], unit="s"))
    return dashboard("tessera-store", "tessera / Store",
                     "One or more stores: regions, Raft, group commit, snapshots.", p, "tessera-store")


def directory():
    lay, p = Layout(), []
    sel = 'job="tessera-directory", instance=~"$instance"'
    p.append(lay.row("Members"))
    p.append(timeseries(lay, "Leader", [(f"tessera_directory_is_leader{{{sel}}}", "{{instance}}")], w=8,
                        desc="1 on the member that leads the directory group."))
    p.append(timeseries(lay, "Ready", [(f"tessera_ready{{{sel}}}", "{{instance}}")], w=8))
    p.append(timeseries(lay, "Regions known",
                        [(f"max({on_leader('tessera_directory_regions')})", "regions")], w=8))
    p.append(timeseries(lay, "Stores by state",
                        [(f"max by (state) ({on_leader('tessera_directory_stores')})", "{{state}}")],
                        stack=True))
    p.append(timeseries(lay, "Operators", [
        ("sum by (kind, outcome) (rate(tessera_directory_operators_total[$__rate_interval]))",
         "{{kind}} {{outcome}}"),
    ], unit="ops", desc="Operators created, finished, timed out and cancelled, by kind."))
    p.append(lay.row("Latency"))
    p.append(timeseries(lay, "Heartbeat handling",
                        quantiles("tessera_directory_heartbeat_seconds", sel, "instance"), unit="s"))
    p.append(timeseries(lay, "Raft commit (propose to apply)",
                        quantiles("tessera_directory_raft_commit_seconds", sel, "instance"), unit="s"))
    p.append(timeseries(lay, "fsync", quantiles("tessera_fsync_seconds", sel, "instance"), unit="s"))
    p.append(timeseries(lay, "Raft messages", [
        (f"sum by (instance) (rate(tessera_raft_messages_sent_total{{{sel}}}[$__rate_interval]))",
         "sent {{instance}}"),
        (f"sum by (instance) (rate(tessera_raft_messages_received_total{{{sel}}}[$__rate_interval]))",
         "received {{instance}}"),
    ], unit="ops"))
    return dashboard("tessera-directory", "tessera / Directory",
                     "The directory members: leadership, metadata, scheduler operators.", p,
                     "tessera-directory")


def router():
    lay, p = Layout(), []
    sel = 'job="tessera-router", instance=~"$instance"'
    p.append(lay.row("Requests"))
    p.append(timeseries(lay, "Requests by operation and outcome", [
        (f"sum by (op, outcome) (rate(tessera_router_requests_total{{{sel}}}[$__rate_interval]))",
         "{{op}} {{outcome}}"),
    ], unit="reqps"))
    p.append(timeseries(lay, "Requests by router", [
        (f"sum by (instance) (rate(tessera_router_requests_total{{{sel}}}[$__rate_interval]))",
         "{{instance}}"),
    ], unit="reqps"))
    p.append(timeseries(lay, "Latency p99 by operation",
                        quantiles("tessera_router_request_seconds", sel, "op", (0.99,)), unit="s"))
    p.append(timeseries(lay, "Latency p50 by operation",
                        quantiles("tessera_router_request_seconds", sel, "op", (0.5,)), unit="s"))
    p.append(lay.row("Routing"))
    p.append(timeseries(lay, "Retries by reason", [
        (f"sum by (reason) (rate(tessera_router_retries_total{{{sel}}}[$__rate_interval]))", "{{reason}}"),
    ], unit="ops", desc="not_leader, epoch_not_match, server_is_busy, ...: what the stores answered."))
    p.append(timeseries(lay, "Region cache hit ratio", [
        (f"sum(rate(tessera_router_region_cache_hits_total{{{sel}}}[$__rate_interval])) / "
         f"(sum(rate(tessera_router_region_cache_hits_total{{{sel}}}[$__rate_interval])) + "
         f"sum(rate(tessera_router_region_cache_misses_total{{{sel}}}[$__rate_interval])))", "hit ratio"),
    ], unit="percentunit"))
    p.append(timeseries(lay, "Ready", [(f"tessera_ready{{{sel}}}", "{{instance}}")]))
    return dashboard("tessera-router", "tessera / Router",
                     "The routers: client requests, latency, retries, the region cache.", p,
                     "tessera-router")


def main():
    out = pathlib.Path(__file__).resolve().parent
    check = sys.argv[1:] == ["--check"]
    stale = []
    for name, build in [("overview", overview), ("store", store),
                        ("directory", directory), ("router", router)]:
        path = out / f"{name}.json"
        text = json.dumps(build(), indent=2, sort_keys=True) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run deploy/grafana/generate.py): {', '.join(stale)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
