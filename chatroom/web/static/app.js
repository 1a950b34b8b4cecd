// chatroom web client: the native protocol (docs/protocol.md) over WebSocket, subprotocol chatroom.v1.
// Everything that comes from the network is put on the page as text (textContent), never as HTML.
"use strict";

(function () {
  const SUBPROTOCOL = "chatroom.v1";
  const BACKOFF = [250, 500, 1000, 2000, 3000];  // ms before each reconnect attempt; the last repeats
  const MAX_LOG = 1000;  // lines kept on the page

  const $ = (id) => document.getElementById(id);
  const statusEl = $("status"), logEl = $("log"), roomsEl = $("rooms"), membersEl = $("members");
  const messageEl = $("message"), nickEl = $("nick"), roomEl = $("room"), toEl = $("to");
  const roomTitle = $("room-title"), memberCount = $("member-count");

  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let me = null;            // my name (nickname, else id), as the server shows it
  let wantNick = null;      // nickname to set again after a reconnect
  let room = "lobby";       // the room I am in
  let wantRoom = "lobby";   // the room to go back to after a reconnect
  let members = [];
  let roomsTimer = null;
  let stopped = false;      // the server said BYE quit: do not reconnect

  function setStatus(state, text) {
    statusEl.className = "status " + state;
    statusEl.textContent = text;
    document.body.dataset.state = state;
  }

  function now() {
    const d = new Date();
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // One line in the log: [time] [from] text, every part as text.
  function addLine(kind, from, text) {
    const stick = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
    const li = document.createElement("li");
    li.className = kind;
    const t = document.createElement("time");
    t.dateTime = new Date().toISOString();
    t.textContent = now();
    li.appendChild(t);
    if (from !== null) {
      const f = document.createElement("span");
      f.className = "from";
      f.textContent = from;
      li.appendChild(f);
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.appendChild(body);
    logEl.appendChild(li);
    while (logEl.childElementCount > MAX_LOG) logEl.firstElementChild.remove();
    if (stick) logEl.scrollTop = logEl.scrollHeight;
  }
  const event = (text) => addLine("event", null, text);

  function send(line) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(line);
      return true;
    }
    addLine("error", null, "not connected: not sent");
    return false;
  }

  function renderMembers() {
    membersEl.replaceChildren();
    const chosen = toEl.value;
    toEl.replaceChildren(new Option("room", ""));
    for (const name of members) {
      const li = document.createElement("li");
      li.textContent = name;
      if (name === me) li.className = "me";
      membersEl.appendChild(li);
      if (name !== me) toEl.appendChild(new Option(name, name));
    }
    toEl.value = members.includes(chosen) ? chosen : "";
    memberCount.textContent = "(" + members.length + ")";
  }

  function renderRooms(list) {
    roomsEl.replaceChildren();
    for (const entry of list) {
      const cut = entry.lastIndexOf(":");
      const name = entry.slice(0, cut), count = entry.slice(cut + 1);
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = name + " (" + count + ")";
      b.dataset.room = name;
      if (name === room) b.setAttribute("aria-current", "true");
      b.addEventListener("click", () => { if (name !== room) send("JOIN " + name); messageEl.focus(); });
      li.appendChild(b);
      roomsEl.appendChild(li);
    }
  }

  function refreshRooms() {  // at most once a second, however many joins and parts arrive
    if (roomsTimer === null) {
      roomsTimer = setTimeout(() => { roomsTimer = null; send("ROOMS"); }, 1000);
    }
  }

  // Fields of a server line: the first `n` space-separated, then the rest as one.
  function fields(rest, n) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const sp = rest.indexOf(" ");
      if (sp < 0) { out.push(rest); rest = ""; break; }
      out.push(rest.slice(0, sp));
      rest = rest.slice(sp + 1);
    }
    out.push(rest);
    return out;
  }

  function onLine(line) {
    const sp = line.indexOf(" ");
    const name = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? "" : line.slice(sp + 1);
    switch (name) {
      case "HELLO": {
        me = fields(rest, 1)[0];
        attempt = 0;
        setStatus("connected", "connected");
        if (wantNick) send("NICK " + wantNick);
        if (wantRoom !== "lobby") send("JOIN " + wantRoom);
        break;
      }
      case "MSG": {
        const [, from, text] = fields(rest, 2);
        addLine("msg", from, text);
        break;
      }
      case "TELL": {
        const [from, text] = fields(rest, 1);
        addLine("tell", from + " → you", text);
        break;
      }
      case "JOIN": {
        const [where, who] = fields(rest, 1);
        if (who === me) {
          room = wantRoom = where;
          roomTitle.textContent = where;
          members = [];
          event("you are in " + where);
          send("WHO");
        } else if (where === room) {
          if (!members.includes(who)) members.push(who);
          renderMembers();
          event(who + " joined");
        }
        refreshRooms();
        break;
      }
      case "PART": {
        const [where, who, reason] = fields(rest, 2);
        if (where === room && who !== me) {
          members = members.filter((m) => m !== who);
          renderMembers();
          event(who + (reason === "join" ? " went to another room" :
                       " left" + (reason ? " (" + reason + ")" : "")));
        }
        refreshRooms();
        break;
      }
      case "NICK": {
        const [old, now_] = fields(rest, 1);
        if (old === me) {
          me = now_;
          wantNick = now_;
          nickEl.value = now_;
        }
        members = members.map((m) => (m === old ? now_ : m));
        renderMembers();
        event(old + " is now " + now_);
        break;
      }
      case "WHO": {
        const names = rest.split(" ").filter(Boolean);
        names.shift();
        members = names;
        renderMembers();
        break;
      }
      case "ROOMS":
        renderRooms(rest.split(" ").filter(Boolean));
        break;
      case "PING":
        send(rest ? "PONG " + rest : "PONG");
        break;
      case "PONG":
        break;
      case "ERR": {
        const [code, text] = fields(rest, 1);
        addLine("error", null, text + " (" + code + ")");
        break;
      }
      case "BYE":
        event("server closed the connection: " + rest);
        if (rest === "quit") stopped = true;
        break;
      default:
        event(line);  // NOTICE and anything newer: shown as it is
    }
  }

  function connect() {
    retryTimer = null;
    setStatus(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting…" : "connecting…");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    let sock;
    try {
      sock = new WebSocket(url, SUBPROTOCOL);
    } catch (err) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onmessage = (e) => { if (typeof e.data === "string") onLine(e.data); };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      members = [];
      renderMembers();
      if (stopped) {
        setStatus("closed", "disconnected");
        return;
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
    attempt += 1;
    setStatus("reconnecting", "disconnected: retrying in " + Math.ceil(delay / 1000) + " s");
    retryTimer = setTimeout(connect, delay);
  }

  // What the user types: a line for the room, or a few slash commands.
  function submit(text) {
    const target = toEl.value;
    if (text.startsWith("/")) {
      const [cmd, arg, more] = fields(text.slice(1), 2);
      switch (cmd.toLowerCase()) {
        case "nick": if (arg) { wantNick = arg; send("NICK " + arg); } return;
        case "join": if (arg) send("JOIN " + arg); return;
        case "msg": case "tell":
          if (arg && more && send("TELL " + arg + " " + more)) addLine("tell mine", "you → " + arg, more);
          return;
        case "who": send("WHO"); return;
        case "rooms": send("ROOMS"); return;
        case "help":
          event("/nick NAME · /join ROOM · /msg WHO TEXT · /who · /rooms; pick a person in the list before the box to talk privately");
          return;
        default:
          if (!text.startsWith("//")) { addLine("error", null, "unknown command /" + cmd + " (try /help)"); return; }
          text = text.slice(1);  // "//text" says "/text"
      }
    }
    if (target) {
      if (send("TELL " + target + " " + text)) addLine("tell mine", "you → " + target, text);
    } else if (send("SEND " + text)) {
      addLine("msg mine", me || "you", text);
    }
  }

  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = messageEl.value;
    if (!text.trim()) return;
    submit(text);
    messageEl.value = "";
    messageEl.focus();
  });
  $("nick-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const nick = nickEl.value.trim();
    if (nick) { wantNick = nick; send("NICK " + nick); }
    messageEl.focus();
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = roomEl.value.trim();
    if (name) send("JOIN " + name);
    roomEl.value = "";
    messageEl.focus();
  });
  // A closed tab says goodbye; the others see it leave at once.
  window.addEventListener("pagehide", () => { if (ws) ws.close(1001); });

  connect();
  messageEl.focus();
})();
