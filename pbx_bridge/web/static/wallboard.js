/* pbx-bridge wallboard: renders the daemon's live snapshot (see pbx_bridge/board.py).
 *
 * The page keeps no counts of its own: every number comes from the latest snapshot, so a page
 * reloaded mid-day shows the same figures. Timers (longest wait, holds, time in state) tick every
 * second between pushes from the snapshot's `ts` plus the offset between the server clock and
 * the page clock; hold colours are computed here from the live timer and the policy thresholds.
 *
 * No build step, no framework, no external resources.
 */
"use strict";

(function () {
  const STALE_MS = 4000; // the server pushes at least once a second: silence this long = lost
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 15000;
  const TICK_MS = 250;
  const OFFSET_JITTER_S = 0.3; // ignore clock-offset changes smaller than this (network jitter)
  const FEED_MAX = 12; // items rendered; the panel clips whatever does not fit
  const ALL = "*";
  const NO_QUEUE = "none";
  // Most useful first: an agent in several queues is shown in the best of its states.
  const STATES = ["on_call", "ringing", "available", "paused", "logged_out"];

  // ------------------------------------------------------------------ labels

  const I18N = {
    "zh-CN": {
      connLost: "连接中断，正在重连…",
      connecting: "正在连接…",
      today: "今日",
      allQueues: "全部队列",
      direct: "直拨（无队列）",
      waiting: "排队等待",
      longestWait: "最长等待",
      withinRings: "{rings}声内接听率",
      withinRingsFormula: "≤{rings}声接听 ÷ 已接听",
      answered: "已接听",
      abandoned: "放弃",
      unanswered: "未接听",
      avgTta: "平均应答",
      onHold: "保持中",
      overTarget: "超{min}分钟",
      overMax: "超{min}分钟",
      callbacksOverdue: "逾期回拨",
      liveNow: "进行中 {n}",
      unattended: "无人值守",
      agentsTitle: "座席状态",
      noAgents: "暂无座席数据",
      holdsTitle: "保持中的通话",
      holdsLimits: "{warn}秒黄 · {limit}秒红",
      noHolds: "当前没有保持中的通话",
      feedTitle: "违规实时动态",
      noViolations: "今日暂无违规",
      violationsToday: "今日 {n} 次",
      live: "进行中",
      consult: "转接咨询",
      pbxUp: "交换机已连接",
      pbxDown: "交换机连接中断",
      s: "秒",
      min: "{n}分钟",
      ofLimit: "{value}秒 / 限{limit}秒",
      states: { available: "空闲", ringing: "振铃", on_call: "通话中", paused: "暂停", logged_out: "已登出" },
      rules: {
        "answer.within_rings": "超过{rings}声接听",
        "answer.five_rings": "响铃5声以上",
        "call.unanswered": "来电无人接听",
        "hold.too_long": "保持超过{hold}秒",
        "transfer.unconfirmed": "转接未确认有人接听",
        "transfer.lost": "转接后来电丢失",
        "hangup.agent_first": "座席先挂机",
        "duration.over_target": "通话超过{target}",
        "duration.over_max": "通话超过{max}",
        "callback.overdue": "未接来电逾期未回拨",
        "center.unattended": "队列无人值守",
        "agent.complaints": "座席当月投诉≥2次",
      },
    },
    en: {
      connLost: "Connection lost — reconnecting…",
      connecting: "Connecting…",
      today: "Today",
      allQueues: "All queues",
      direct: "Direct (no queue)",
      waiting: "Waiting",
      longestWait: "Longest wait",
      withinRings: "Answered within {rings} rings",
      withinRingsFormula: "≤{rings} rings ÷ answered",
      answered: "Answered",
      abandoned: "Aban\u00addoned",
      unanswered: "Un\u00adanswered", // soft hyphens: narrow tiles break long words cleanly
      avgTta: "Avg answer",
      onHold: "On hold",
      overTarget: "Over {min} min",
      overMax: "Over {min} min",
      callbacksOverdue: "Call\u00adbacks overdue",
      liveNow: "now {n}",
      unattended: "Unattended",
      agentsTitle: "Agents",
      noAgents: "No agent data yet",
      holdsTitle: "Calls on hold",
      holdsLimits: "amber {warn} s · red {limit} s",
      noHolds: "No call on hold",
      feedTitle: "Violations — live feed",
      noViolations: "No violations today",
      violationsToday: "{n} today",
      live: "NOW",
      consult: "transfer consult",
      pbxUp: "PBX connected",
      pbxDown: "PBX link down",
      s: "s",
      min: "{n} min",
      ofLimit: "{value} s / limit {limit} s",
      states: { available: "Available", ringing: "Ringing", on_call: "On call", paused: "Paused", logged_out: "Logged out" },
      rules: {
        "answer.within_rings": "Answered after {rings} rings",
        "answer.five_rings": "Rang 5 times or more",
        "call.unanswered": "Call not answered",
        "hold.too_long": "Hold over {hold} s",
        "transfer.unconfirmed": "Transfer not confirmed",
        "transfer.lost": "Caller lost after transfer",
        "hangup.agent_first": "Agent hung up first",
        "duration.over_target": "Talk over {target}",
        "duration.over_max": "Talk over {max}",
        "callback.overdue": "Callback overdue",
        "center.unattended": "Queue unattended",
        "agent.complaints": "Agent complaints ≥ 2 / month",
      },
    },
  };

  const DEFAULT_POLICY = {
    ring_seconds: 3,
    rings_limit: 3,
    rings_apology: 5,
    hold_limit_s: 60,
    hold_warn_s: 45,
    talk_target_s: 180,
    talk_max_s: 300,
  };

  // ------------------------------------------------------------------ state

  const st = {
    snap: null,
    offset: 0, // server epoch seconds − page epoch seconds
    lastMsgAt: 0, // performance.now() of the last snapshot
    es: null,
    backoffMs: BACKOFF_MIN_MS,
    retryTimer: null,
    lost: false,
    keys: {}, // section → key of what is rendered (skip identical re-renders)
  };

  function langOverride() {
    const raw = new URLSearchParams(window.location.search).get("lang");
    return normLang(raw);
  }

  function normLang(raw) {
    if (!raw) return null;
    const v = String(raw).toLowerCase();
    if (v.startsWith("zh")) return "zh-CN";
    if (v.startsWith("en")) return "en";
    return null;
  }

  function currentLang() {
    return langOverride() || normLang(st.snap && st.snap.ui && st.snap.ui.lang) || "zh-CN";
  }

  function dict() {
    return I18N[currentLang()];
  }

  function fill(text, vars) {
    return text.replace(/\{(\w+)\}/g, (m, k) => (vars && vars[k] !== undefined ? String(vars[k]) : m));
  }

  function t(key, vars) {
    const v = dict()[key];
    if (v === undefined) return key;
    return typeof v === "string" ? fill(v, vars) : v;
  }

  function policy() {
    return Object.assign({}, DEFAULT_POLICY, (st.snap && st.snap.policy) || {});
  }

  function minutes(seconds) {
    const m = seconds / 60;
    return t("min", { n: Number.isInteger(m) ? m : m.toFixed(1) });
  }

  /** The human label of a rule id (the id itself is a public contract and is shown beside it). */
  function ruleLabel(rule) {
    const p = policy();
    const text = dict().rules[rule];
    if (!text) return rule;
    return fill(text, {
      rings: p.rings_limit,
      hold: fmtNum(p.hold_limit_s),
      target: minutes(p.talk_target_s),
      max: minutes(p.talk_max_s),
    });
  }

  function queueLabel(name) {
    if (name === ALL) return t("allQueues");
    if (name === NO_QUEUE || name === null || name === undefined) return t("direct");
    return name;
  }

  /** `data-testid` suffix of a queue: "*" → "all". */
  function slug(name) {
    if (name === ALL) return "all";
    return String(name === null || name === undefined ? NO_QUEUE : name).replace(/[^\w.-]/g, "_");
  }

  // ------------------------------------------------------------------ formatting

  function nowServer() {
    return Date.now() / 1000 + st.offset;
  }

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function fmtDur(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }

  function fmtClock(epoch) {
    const d = new Date(epoch * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtNum(v) {
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 10) / 10);
  }

  // ------------------------------------------------------------------ DOM helpers

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /** Replace `node`'s children with `build()` unless `key` equals what is already rendered. */
  function patch(section, node, key, build) {
    if (st.keys[section] === key) return false;
    st.keys[section] = key;
    node.replaceChildren(...[].concat(build()));
    return true;
  }

  /** A ticking timer: text and colour level recomputed every tick from `since`. */
  function timer(kind, since, attrs) {
    return h("span", Object.assign({ class: `timer timer-${kind}`, "data-kind": kind, "data-since": since }, attrs || {}));
  }

  /** Pulsing things stay in phase across re-renders. */
  function syncPulse(node) {
    node.style.animationDelay = `-${Date.now() % 1600}ms`;
    return node;
  }

  // ------------------------------------------------------------------ rendering

  function applyStaticLabels() {
    const lang = currentLang();
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.getAttribute("data-i18n"));
    }
  }

  function render() {
    const snap = st.snap;
    if (!snap) return;
    const lang = currentLang();
    if (st.keys.lang !== lang) {
      st.keys = { lang };
      applyStaticLabels();
    }
    document.body.classList.remove("booting");
    renderHeader(snap);
    const agents = floorAgents(snap.agents || []);
    renderQueues(snap, agents);
    renderAgents(agents);
    renderHolds(snap, agents);
    renderFeed(snap, agents);
    tick();
  }

  function renderHeader(snap) {
    const ui = snap.ui || {};
    const title = ui.title || "pbx-bridge";
    document.getElementById("title").textContent = title;
    document.title = title;
    document.getElementById("day").textContent = snap.day || "—";
    const pill = document.getElementById("pbx-status");
    if (snap.connected === true || snap.connected === false) {
      pill.hidden = false;
      pill.textContent = snap.connected ? t("pbxUp") : t("pbxDown");
      pill.className = "pill " + (snap.connected ? "pill-ok" : "pill-bad");
    } else {
      pill.hidden = true;
    }
  }

  /** One entry per agent (the snapshot has one per queue membership). */
  function floorAgents(list) {
    const rank = (s) => {
      const i = STATES.indexOf(s);
      return i < 0 ? STATES.length : i;
    };
    const by = new Map();
    for (const a of list) {
      const cur = by.get(a.agent);
      if (!cur) {
        by.set(a.agent, { agent: a.agent, name: a.name || a.agent, state: a.state, since: a.since, reason: a.reason, queues: [a.queue] });
        continue;
      }
      cur.queues.push(a.queue);
      if (rank(a.state) < rank(cur.state)) {
        Object.assign(cur, { state: a.state, since: a.since, reason: a.reason });
      } else if (a.state === cur.state && a.since < cur.since) {
        cur.since = a.since;
      }
    }
    const out = [...by.values()];
    out.sort(
      (x, y) =>
        (x.state === "logged_out") - (y.state === "logged_out") ||
        String(x.name).localeCompare(String(y.name), undefined, { numeric: true })
    );
    return out;
  }

  function agentCounts(agents) {
    const counts = {};
    for (const s of STATES) counts[s] = 0;
    for (const a of agents) counts[a.state] = (counts[a.state] || 0) + 1;
    return counts;
  }

  function stateChips(counts, sfx) {
    return STATES.filter((s) => s !== "logged_out" || counts[s] > 0).map((s) =>
      h(
        "span",
        { class: `chip chip-${s}` + (counts[s] ? "" : " chip-zero"), "data-testid": `agents-${s}-${sfx}`, "data-value": counts[s] || 0 },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "chip-label", text: t("states")[s] }),
        h("b", { text: counts[s] || 0 })
      )
    );
  }

  function stat(label, value, testid, opts) {
    const o = opts || {};
    const shown = value === null || value === undefined ? "—" : value;
    return h(
      "div",
      { class: "stat " + (o.cls || "") },
      h("div", { class: "stat-label", text: label }),
      h(
        "div",
        { class: "stat-value" },
        h("span", { class: "num", "data-testid": testid, "data-value": o.raw !== undefined ? o.raw : value, text: shown }),
        o.unit && value !== null && value !== undefined ? h("span", { class: "unit", text: o.unit }) : null
      ),
      o.extra || null
    );
  }

  function level(n, cls) {
    return n > 0 ? cls : "";
  }

  function queueCard(q, agents, p) {
    const sfx = slug(q.queue);
    const isAll = q.queue === ALL;
    const counts = isAll ? agentCounts(agents) : Object.assign(agentCounts([]), q.agents || {});
    const waitSince = q.waiting > 0 ? st.snap.ts - (q.longest_wait_s || 0) : null;
    const pct = q.within_rings_pct;
    const liveBadge = (n, testid, cls) =>
      n > 0 ? syncPulse(h("span", { class: `live-badge ${cls}`, "data-testid": testid, "data-value": n, text: t("liveNow", { n }) })) : null;

    return h(
      "article",
      { class: "qcard" + (isAll ? " qcard-all" : ""), "data-testid": `queue-${sfx}`, "data-queue": q.queue },
      h(
        "div",
        { class: "qhead" },
        h("h2", { class: "qname", text: queueLabel(q.queue) }),
        q.unattended_since
          ? syncPulse(
              h(
                "span",
                { class: "flag flag-red qhead-flag", "data-testid": `unattended-${sfx}` },
                t("unattended") + " ",
                timer("unattended", q.unattended_since)
              )
            )
          : null,
        // Nobody to answer: the alarm takes the place of the agent counts (which say the same).
        q.unattended_since ? null : h("div", { class: "chips" }, stateChips(counts, sfx))
      ),
      h(
        "div",
        { class: "qmain" },
        stat(t("waiting"), q.waiting, `waiting-${sfx}`, { cls: "stat-xl " + (q.waiting > 0 ? "is-waiting" : "is-zero") }),
        h(
          "div",
          { class: "stat stat-xl" },
          h("div", { class: "stat-label", text: t("longestWait") }),
          h(
            "div",
            { class: "stat-value" },
            waitSince !== null
              ? timer("wait", waitSince, { class: "timer timer-wait num", "data-testid": `longest-wait-${sfx}` })
              : h("span", { class: "num is-zero", "data-testid": `longest-wait-${sfx}`, "data-value": 0, text: "0:00" })
          )
        ),
        h(
          "div",
          { class: "stat stat-xl stat-pct" },
          h("div", { class: "stat-label", text: t("withinRings", { rings: p.rings_limit }) }),
          h(
            "div",
            { class: "stat-value" },
            h("span", { class: "num", "data-testid": `within-rings-pct-${sfx}`, "data-value": pct === null ? "" : pct, text: pct === null || pct === undefined ? "—" : fmtNum(pct) }),
            pct === null || pct === undefined ? null : h("span", { class: "unit", text: "%" })
          ),
          h(
            "div",
            { class: "formula", "data-testid": `within-rings-formula-${sfx}` },
            h("span", { class: "formula-text", text: t("withinRingsFormula", { rings: p.rings_limit }) }),
            h("span", { class: "formula-nums", text: ` = ${q.within_rings} / ${q.answered}` })
          )
        )
      ),
      h(
        "div",
        { class: "qrow" },
        stat(t("answered"), q.answered, `answered-${sfx}`, { cls: "stat-m is-good" }),
        stat(t("abandoned"), q.abandoned, `abandoned-${sfx}`, { cls: "stat-m " + level(q.abandoned, "is-amber") }),
        stat(t("unanswered"), q.unanswered, `unanswered-${sfx}`, { cls: "stat-m " + level(q.unanswered, "is-red") }),
        stat(t("avgTta"), q.avg_tta_s === null ? null : Math.round(q.avg_tta_s), `avg-tta-${sfx}`, {
          cls: "stat-m " + (q.avg_tta_s !== null && q.avg_tta_s > p.rings_limit * p.ring_seconds ? "is-amber" : ""),
          unit: t("s"),
          raw: q.avg_tta_s === null ? "" : q.avg_tta_s,
        })
      ),
      h(
        "div",
        { class: "qrow qrow-alerts" },
        stat(t("onHold"), q.on_hold, `on-hold-${sfx}`, { cls: "stat-m " + level(q.on_hold, "is-blue") }),
        stat(t("overTarget", { min: fmtNum(p.talk_target_s / 60) }), q.over_target, `over-target-${sfx}`, {
          cls: "stat-m " + level(q.over_target + q.talking_over_target, "is-amber"),
          extra: liveBadge(q.talking_over_target, `talking-over-target-${sfx}`, "badge-amber"),
        }),
        stat(t("overMax", { min: fmtNum(p.talk_max_s / 60) }), q.over_max, `over-max-${sfx}`, {
          cls: "stat-m " + level(q.over_max + q.talking_over_max, "is-red"),
          extra: liveBadge(q.talking_over_max, `talking-over-max-${sfx}`, "badge-red"),
        }),
        stat(t("callbacksOverdue"), q.callbacks_overdue, `callbacks-overdue-${sfx}`, { cls: "stat-m " + level(q.callbacks_overdue, "is-red") })
      )
    );
  }

  function renderQueues(snap, agents) {
    const node = document.getElementById("queues");
    const queues = (snap.queues || []).slice();
    // The overall tile first, then the queues, then direct calls.
    queues.sort((a, b) => rankQ(a.queue) - rankQ(b.queue) || String(a.queue).localeCompare(String(b.queue)));
    const p = policy();
    const key = JSON.stringify([
      queues.map((q) => Object.assign({}, q, { longest_wait_s: q.waiting > 0 ? Math.round(snap.ts - q.longest_wait_s) : 0 })),
      agentCounts(agents),
      p,
    ]);
    patch("queues", node, key, () => queues.map((q) => queueCard(q, agents, p)));
    node.style.setProperty("--n", String(Math.max(queues.length, 1)));
  }

  function rankQ(name) {
    return name === ALL ? 0 : name === NO_QUEUE ? 2 : 1;
  }

  function renderAgents(agents) {
    const node = document.getElementById("agents");
    const n = agents.length;
    const cols = n <= 20 ? 4 : n <= 30 ? 5 : 6;
    const rows = Math.max(Math.ceil(n / cols), 5);
    node.style.setProperty("--cols", String(cols));
    node.style.setProperty("--rows", String(rows));
    node.classList.toggle("agents-dense", n > 20);
    patch("agents-summary", document.getElementById("agents-summary"), JSON.stringify(agentCounts(agents)), () =>
      stateChips(agentCounts(agents), "floor")
    );
    const key = JSON.stringify(agents.map((a) => [a.agent, a.name, a.state, a.since, a.reason]));
    patch("agents", node, key, () =>
      n === 0
        ? [h("div", { class: "empty", text: t("noAgents") })]
        : agents.map((a) =>
            h(
              "div",
              { class: `agent agent-${a.state}`, "data-testid": "agent", "data-agent": a.agent, "data-state": a.state },
              h("div", { class: "agent-name", text: a.name }),
              h(
                "div",
                { class: "agent-line" },
                a.state === "paused" && a.reason
                  ? h("span", { class: "agent-state", "data-testid": "agent-state", title: t("states").paused }, h("span", { class: "pause-sign", "aria-label": t("states").paused }), a.reason)
                  : h("span", { class: "agent-state", "data-testid": "agent-state", text: t("states")[a.state] || a.state }),
                // Time in state; not for agents who logged out (nobody waits for them).
                a.state === "logged_out" ? null : timer(a.state === "on_call" ? "talk" : "state", a.since, { "data-testid": "agent-timer" })
              )
            )
          )
    );
  }

  function agentName(device, agents) {
    if (!device) return "—";
    const hit = agents.find((a) => a.agent === device);
    return hit ? hit.name : device;
  }

  function renderHolds(snap, agents) {
    const p = policy();
    document.getElementById("holds-limits").textContent = t("holdsLimits", { warn: fmtNum(p.hold_warn_s), limit: fmtNum(p.hold_limit_s) });
    const holds = snap.holds || [];
    const node = document.getElementById("holds");
    const key = JSON.stringify([holds.map((x) => [x.call_id, x.agent, x.queue, x.caller, x.since, x.consult]), agents.map((a) => [a.agent, a.name])]);
    patch("holds", node, key, () =>
      holds.length === 0
        ? [h("li", { class: "empty", text: t("noHolds") })]
        : holds.map((x) =>
            h(
              "li",
              { class: "hold", "data-testid": "hold", "data-call-id": x.call_id },
              h(
                "div",
                { class: "hold-who" },
                h("div", { class: "hold-agent", text: agentName(x.agent, agents) }),
                h(
                  "div",
                  { class: "hold-meta" },
                  [queueLabel(x.queue), x.caller || null].filter(Boolean).join(" · "),
                  x.consult ? h("span", { class: "tag", text: t("consult") }) : null
                )
              ),
              // Per-queue thresholds when the server sends them, else the snapshot's policy.
              timer("hold", x.since, { "data-testid": "hold-timer", "data-call-id": x.call_id, "data-warn": x.warn_s, "data-limit": x.limit_s })
            )
          )
    );
  }

  function renderFeed(snap, agents) {
    const all = (snap.queues || []).find((q) => q.queue === ALL);
    const count = document.getElementById("violations-today");
    count.textContent = all ? t("violationsToday", { n: all.violations }) : "";
    count.setAttribute("data-value", all ? all.violations : "");
    const items = (snap.violations || []).slice(0, FEED_MAX);
    const holding = new Set((snap.holds || []).map((x) => x.call_id));
    const node = document.getElementById("feed");
    const key = JSON.stringify([items, [...holding], agents.map((a) => [a.agent, a.name]), policy()]);
    patch("feed", node, key, () =>
      items.length === 0
        ? [h("li", { class: "empty", text: t("noViolations") })]
        : items.map((v) => {
            const now = v.live && holding.has(v.call_id);
            const detail = [fmtClock(v.ts), agentName(v.agent, agents), queueLabel(v.queue)];
            if (v.caller) detail.push(v.caller);
            if (v.live && v.value !== undefined && v.limit !== undefined) {
              detail.push(t("ofLimit", { value: Math.round(v.value), limit: fmtNum(v.limit) }));
            }
            const li = h(
              "li",
              {
                class: "feed-item" + (v.live ? " feed-live" : "") + (now ? " feed-now" : ""),
                "data-testid": "feed-item",
                "data-rule": v.rule,
                "data-live": v.live ? "true" : "false",
                "data-call-id": v.call_id,
              },
              h(
                "div",
                { class: "feed-top" },
                v.live ? h("span", { class: "live-tag", "data-testid": "feed-live", text: t("live") }) : null,
                h("span", { class: "feed-label", "data-testid": "feed-label", text: ruleLabel(v.rule) }),
                h("code", { class: "feed-rule", text: v.rule })
              ),
              h("div", { class: "feed-detail", text: detail.join(" · ") })
            );
            return now ? syncPulse(li) : li;
          })
    );
  }

  // ------------------------------------------------------------------ the clock

  function tick() {
    const now = nowServer();
    checkStale();
    document.getElementById("clock").textContent = st.snap ? fmtClock(now) : "--:--:--";
    if (!st.snap) return;
    const p = policy();
    const waitAmber = p.rings_limit * p.ring_seconds; // past the 3rd ring: already a breach
    const waitRed = (p.rings_apology - 1) * p.ring_seconds; // the caller hears the 5th ring
    for (const node of document.querySelectorAll(".timer[data-since]")) {
      const secs = Math.max(0, now - Number(node.getAttribute("data-since")));
      const text = fmtDur(secs);
      if (node.textContent !== text) node.textContent = text;
      node.setAttribute("data-seconds", String(Math.floor(secs)));
      let lvl = "ok";
      switch (node.getAttribute("data-kind")) {
        case "hold": {
          // Same strict comparison as the engine: red once past the limit, amber past the warning.
          const limit = Number(node.getAttribute("data-limit") || p.hold_limit_s);
          const warn = Number(node.getAttribute("data-warn") || p.hold_warn_s);
          lvl = secs > limit ? "red" : secs > warn ? "amber" : "ok";
          break;
        }
        case "wait":
          lvl = secs > waitRed ? "red" : secs > waitAmber ? "amber" : "ok";
          break;
        case "talk":
          lvl = secs > p.talk_max_s ? "red" : secs > p.talk_target_s ? "amber" : "ok";
          break;
        case "unattended":
          lvl = "red";
          break;
        default:
          lvl = "ok";
      }
      setLevel(node, lvl);
      const row = node.closest(".hold");
      if (row) setLevel(row, lvl);
    }
  }

  function setLevel(node, lvl) {
    if (node.getAttribute("data-level") === lvl) return;
    node.setAttribute("data-level", lvl);
    node.classList.remove("lvl-ok", "lvl-amber", "lvl-red");
    node.classList.add(`lvl-${lvl}`);
    if (lvl === "red") syncPulse(node);
  }

  // ------------------------------------------------------------------ the connection

  function onSnapshot(ev) {
    let snap;
    try {
      snap = JSON.parse(ev.data);
    } catch (_err) {
      return;
    }
    const offset = snap.ts - Date.now() / 1000;
    if (!st.snap || Math.abs(offset - st.offset) > OFFSET_JITTER_S) st.offset = offset;
    st.snap = snap;
    st.lastMsgAt = performance.now();
    st.backoffMs = BACKOFF_MIN_MS;
    setLost(false);
    render();
  }

  function connect() {
    clearTimeout(st.retryTimer);
    st.retryTimer = null;
    if (st.es) st.es.close();
    const es = new EventSource("api/live/stream");
    st.es = es;
    st.openedAt = performance.now();
    es.addEventListener("snapshot", onSnapshot);
    es.onerror = () => {
      if (st.es !== es) return;
      setLost(true);
      // CONNECTING: the browser retries by itself. CLOSED (an HTTP error, a proxy page): we do.
      if (es.readyState === EventSource.CLOSED) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (st.retryTimer) return;
    const delay = st.backoffMs;
    st.backoffMs = Math.min(st.backoffMs * 2, BACKOFF_MAX_MS);
    st.retryTimer = setTimeout(connect, delay);
  }

  /** Silence for longer than the heartbeat means the stream is dead, whatever the browser thinks. */
  function checkStale() {
    const last = Math.max(st.lastMsgAt, st.openedAt || 0);
    const silent = performance.now() - last;
    if (st.snap && performance.now() - st.lastMsgAt > STALE_MS) setLost(true);
    if (silent > STALE_MS + st.backoffMs && !st.retryTimer) {
      st.openedAt = performance.now();
      scheduleReconnect();
    }
  }

  function setLost(lost) {
    if (st.lost === lost) return;
    st.lost = lost;
    document.getElementById("conn-banner").hidden = !lost;
    document.body.classList.toggle("stale", lost);
  }

  function start() {
    applyStaticLabels();
    connect();
    setInterval(tick, TICK_MS);
    // Before the first snapshot arrives, say so if it takes long.
    setTimeout(() => {
      if (!st.snap) setLost(true);
    }, STALE_MS);
  }

  // For debugging from the console; tests read the DOM.
  window.pbxWallboard = { state: st, labels: I18N, ruleLabel };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
