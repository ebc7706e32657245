// llmgate's chat page: talks to this server's OpenAI-compatible API, keeps conversations in
// localStorage, renders model output as Markdown through markdown-it (raw HTML off) and then
// DOMPurify, so an answer can never inject markup or script.
"use strict";

const STORE = "llmgate.chat.v1";
const $ = (id) => document.getElementById(id);

const md = window.markdownit({ html: false, linkify: true, breaks: false });

const state = load();
let running = null; // {controller, convo, message} while an answer streams
const windows = new Map(); // model id -> its context window in tokens, from /v1/models

function load() {
  const fallback = { conversations: [], current: null, model: "", apiKey: "",
    settings: { system: "", max_tokens: 512, temperature: 0.7, top_p: 1 } };
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) || "null");
    return saved ? { ...fallback, ...saved, settings: { ...fallback.settings, ...saved.settings } } : fallback;
  } catch {
    return fallback;
  }
}

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(state));
  } catch (err) {
    setStatus(`Could not save conversations (${err.name}): delete some old ones`);
  }
}

// Another tab changed the conversations: take its state (unless an answer streams here).
window.addEventListener("storage", (event) => {
  if (event.key !== STORE || running) return;
  Object.assign(state, load());
  render();
});

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function currentConversation() {
  let convo = state.conversations.find((c) => c.id === state.current);
  if (!convo) {
    convo = { id: newId(), title: "New chat", messages: [] };
    state.conversations.unshift(convo);
    state.current = convo.id;
  }
  return convo;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
  return h;
}

async function errorText(reply) {
  return (await errorInfo(reply)).text;
}

async function errorInfo(reply) {
  try {
    const body = await reply.json();
    if (body && body.error && body.error.message) {
      return { code: body.error.code, text: `${reply.status}: ${body.error.message}` };
    }
  } catch { /* not JSON */ }
  return { code: null, text: `${reply.status} ${reply.statusText}` };
}

function unreachable(err) {
  // what fetch and a stream's reader throw when the connection fails (or never opens)
  return err instanceof TypeError && /fetch|network/i.test(err.message);
}

// -- models ----------------------------------------------------------------------------------

function isChatModel(card) {
  // Cards that list their endpoints say whether they chat; others are chat models.
  return !Array.isArray(card.endpoints) || card.endpoints.some((e) => e.includes("chat"));
}

async function loadModels() {
  const select = $("model");
  setStatus("Loading models…");
  let reply;
  try {
    reply = await fetch("v1/models", { headers: headers() });
  } catch (err) {
    setStatus(unreachable(err) ? "Cannot reach the server: is `llmgate serve` running?" : `Server unreachable: ${err.message}`);
    return;
  }
  if (reply.status === 401) {
    $("api-key-row").hidden = false;
    openSidebar();
    $("api-key").focus();
    setStatus(state.apiKey ? "That API key was refused" : "This server needs an API key");
    select.replaceChildren();
    return;
  }
  if (!reply.ok) {
    setStatus(await errorText(reply));
    return;
  }
  let cards;
  try {
    cards = (await reply.json()).data.filter(isChatModel);
  } catch {
    setStatus("The server's model list is not what an OpenAI-compatible server sends");
    return;
  }
  windows.clear();
  for (const card of cards) {
    const size = card.max_model_len || (card.capabilities && card.capabilities.context_length);
    if (Number.isInteger(size) && size > 0) windows.set(card.id, size);
  }
  select.replaceChildren(...cards.map((card) => {
    const option = document.createElement("option");
    option.value = card.id;
    option.textContent = card.aliases && card.aliases.length ? `${card.id} (${card.aliases.join(", ")})` : card.id;
    return option;
  }));
  if (cards.some((c) => c.id === state.model)) select.value = state.model;
  if (cards.length) {
    state.model = select.value;
    save();
  }
  setStatus(cards.length ? "" : "No chat models are configured");
}

function setStatus(text) {
  $("status").textContent = text;
}

// -- rendering -------------------------------------------------------------------------------

function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(md.render(text));
  for (const pre of element.querySelectorAll("pre")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", () => copy(pre.querySelector("code")?.innerText ?? pre.innerText, button));
    pre.appendChild(button);
  }
  for (const link of element.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

async function copy(text, button) {
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    // Plain http on a LAN address is not a secure context: no async clipboard there.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { copied = document.execCommand("copy"); } catch { copied = false; }
    area.remove();
  }
  button.textContent = copied ? "Copied" : "Copy failed";
  setStatus(copied ? "Copied to the clipboard" : "Could not copy");
  setTimeout(() => { button.textContent = "Copy"; }, 1200);
}

function actionButton(label, aria, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-label", aria);
  button.addEventListener("click", onClick);
  return button;
}

function formatStats(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.tokens != null) parts.push(`${stats.tokens} tokens`);
  else if (stats.approx != null) parts.push(`${stats.approx} pieces`);
  if (stats.ttft != null) parts.push(`first token ${(stats.ttft / 1000).toFixed(2)} s`);
  if (stats.rate != null) parts.push(`${stats.rate.toFixed(1)} tok/s`);
  return parts.join(" · ");
}

function messageElement(convo, message, index) {
  const wrapper = document.createElement("article");
  wrapper.className = `message ${message.role}`;
  wrapper.dataset.index = String(index);
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "assistant" ? (message.model || "assistant") : message.role;
  wrapper.appendChild(role);

  if (message.reasoning) wrapper.appendChild(reasoningElement(message));

  const body = document.createElement("div");
  body.className = "body";
  if (message.role === "assistant") renderMarkdown(body, message.content || "");
  else body.textContent = message.content;
  wrapper.appendChild(body);

  const isLast = index === convo.messages.length - 1;
  const actions = document.createElement("div");
  actions.className = "actions";
  if (message.role === "assistant") {
    if (message.stopped || message.cut) {
      const note = document.createElement("span");
      note.className = "stopped";
      note.textContent = message.stopped ? "stopped" : "cut at max tokens";
      actions.appendChild(note);
    }
    actions.appendChild(actionButton("Copy", "Copy answer", (e) => copy(message.content || "", e.currentTarget)));
    if (isLast && !running) actions.appendChild(actionButton("Regenerate", "Regenerate answer", regenerate));
    const stats = document.createElement("span");
    stats.className = "stats";
    stats.textContent = formatStats(message.stats);
    actions.appendChild(stats);
  } else if (message.role === "error" && isLast && !running && lastUserIndex(convo) >= 0) {
    actions.appendChild(actionButton("Retry", "Send the last message again", regenerate));
  } else if (message.role === "user" && !running && index === lastUserIndex(convo)) {
    actions.appendChild(actionButton("Edit", "Edit and resend this message", () => editLast(convo)));
  }
  if (actions.childElementCount) wrapper.appendChild(actions);
  return wrapper;
}

function reasoningElement(message) {
  const details = document.createElement("details");
  details.className = "reasoning";
  details.open = Boolean(message.reasoningOpen);
  details.addEventListener("toggle", () => { message.reasoningOpen = details.open; });
  const summary = document.createElement("summary");
  summary.textContent = "Reasoning";
  const thinking = document.createElement("div");
  thinking.className = "thinking";
  thinking.textContent = message.reasoning;
  details.append(summary, thinking);
  return details;
}

function lastUserIndex(convo) {
  for (let i = convo.messages.length - 1; i >= 0; i--) if (convo.messages[i].role === "user") return i;
  return -1;
}

function render() {
  const convo = currentConversation();
  const list = $("conversation-list");
  list.replaceChildren(...state.conversations.map((c) => {
    const item = document.createElement("li");
    if (c.id === convo.id) item.className = "active";
    const open = actionButton(c.title || "New chat", `Open conversation: ${c.title || "New chat"}`, () => {
      if (running) return;
      state.current = c.id;
      save();
      closeSidebar();
      render();
    });
    open.className = "open";
    if (c.id === convo.id) open.setAttribute("aria-current", "true");
    const remove = actionButton("✕", `Delete conversation: ${c.title || "New chat"}`, () => deleteConversation(c.id));
    remove.className = "delete";
    open.disabled = remove.disabled = Boolean(running);
    item.append(open, remove);
    return item;
  }));

  const messages = $("messages");
  const nodes = convo.messages.map((m, i) => messageElement(convo, m, i));
  $("empty").hidden = nodes.length > 0;
  messages.replaceChildren($("empty"), ...nodes);
  messages.scrollTop = messages.scrollHeight;
  $("send").hidden = Boolean(running);
  $("stop").hidden = !running;
  $("new-chat").disabled = Boolean(running);
}

function deleteConversation(id) {
  if (running) return;
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.current === id) state.current = state.conversations[0]?.id ?? null;
  save();
  render();
}

// -- sending ---------------------------------------------------------------------------------

// The messages sent for ``convo``, less its ``skip`` oldest exchanges (each a user message and
// the answer to it): the system prompt and the latest exchanges stay.
function requestMessages(convo, skip = 0) {
  const out = [];
  if (state.settings.system.trim()) out.push({ role: "system", content: state.settings.system });
  let turn = -1;
  for (const m of convo.messages) {
    if (m.role === "user") turn += 1;
    if (turn < skip) continue;
    if (m.role === "user" || (m.role === "assistant" && m.content)) out.push({ role: m.role, content: m.content });
  }
  return out;
}

function userTurns(convo) {
  return convo.messages.filter((m) => m.role === "user").length;
}

let editing = null; // {convo, index} while the last user message is being edited

async function send(text) {
  const convo = currentConversation();
  // Errors, and answers stopped before any text, are not part of the conversation.
  convo.messages = convo.messages.filter(
    (m) => m.role !== "error" && !(m.role === "assistant" && !m.content),
  );
  if (editing && editing.convo === convo) convo.messages = convo.messages.slice(0, editing.index);
  editing = null;
  // A question left without an answer (an error, or stopped before any text) is replaced, so
  // the history keeps alternating user / assistant turns, as chat templates require.
  while (convo.messages.length && convo.messages[convo.messages.length - 1].role === "user") {
    convo.messages.pop();
  }
  convo.messages.push({ role: "user", content: text });
  if (convo.title === "New chat") convo.title = text.slice(0, 48);
  await answer(convo);
}

function nearBottom(element) {
  return element.scrollHeight - element.scrollTop - element.clientHeight < 48;
}

// Server-Sent Events, as the spec frames them: lines end in \n, \r\n or \r; an event's data
// lines are joined with \n; a blank line ends the event.
function sseParser(onData) {
  let buffer = "";
  let data = [];
  const line = (text) => {
    if (text === "") {
      if (data.length) onData(data.join("\n"));
      data = [];
    } else if (text.startsWith("data:")) {
      data.push(text.slice(text.startsWith("data: ") ? 6 : 5));
    }
  };
  return {
    push(chunk) {
      buffer += chunk;
      const parts = buffer.split(/\r\n|\n|\r(?!$)/);
      buffer = parts.pop();
      parts.forEach(line);
    },
    end() {
      if (buffer) line(buffer.replace(/\r$/, ""));
      line("");
    },
  };
}

async function answer(convo) {
  const model = $("model").value;
  if (!model) {
    const keyNeeded = !$("api-key-row").hidden;
    showError(convo, keyNeeded ? "This server needs an API key: enter it in the sidebar" : "No model selected");
    return;
  }
  const message = { role: "assistant", content: "", reasoning: "", model, stats: null };
  const controller = new AbortController();
  running = { controller, convo, message };
  const started = performance.now();
  let first = null;
  let last = null;
  let usage = null;
  let pieces = 0;
  let failed = null;
  // A chat longer than the model's window goes on without its oldest exchanges, as many as it
  // takes (remembered per conversation and model); the answer gets at most half the window.
  let skip = convo.fit && convo.fit.model === model ? convo.fit.skip : 0;
  const contextWindow = windows.get(model);
  const messages = $("messages");
  try {
    const body = {
      model,
      messages: requestMessages(convo, skip),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: Math.min(Number(state.settings.max_tokens), contextWindow ? Math.max(16, Math.floor(contextWindow / 2)) : Infinity),
      temperature: Number(state.settings.temperature),
      top_p: Number(state.settings.top_p),
    };
    convo.messages.push(message);
    save();
    render();
    messages.setAttribute("aria-busy", "true");
    const element = messages.lastElementChild;
    const bodyElement = element.querySelector(".body");
    bodyElement.classList.add("cursor");
    let pending = false;
    const repaint = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        const stick = nearBottom(messages);
        renderMarkdown(bodyElement, message.content);
        bodyElement.classList.add("cursor");
        let details = element.querySelector("details.reasoning");
        if (message.reasoning && !details) {
          details = reasoningElement(message);
          element.insertBefore(details, bodyElement);
        }
        if (details) details.querySelector(".thinking").textContent = message.reasoning;
        if (stick) messages.scrollTop = messages.scrollHeight;
      });
    };
    const onData = (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        const thinking = delta.reasoning_content || delta.reasoning;  // either name, never both
        if (delta.content || thinking) {
          last = performance.now();
          if (first === null) first = last;
          pieces += 1;
        }
        if (delta.content) message.content += delta.content;
        if (thinking) message.reasoning += thinking;
        if (choice.finish_reason === "length") message.cut = true;
      }
      repaint();
    };
    let reply;
    for (;;) {
      reply = await fetch("v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
      });
      if (reply.ok) break;
      const error = await errorInfo(reply);
      if (error.code !== "context_length_exceeded") throw new Error(error.text);
      if (skip < userTurns(convo) - 1) {
        skip += 1;
        body.messages = requestMessages(convo, skip);
      } else if ("max_tokens" in body) {
        delete body.max_tokens; // the window is unknown here: the answer gets the room left
      } else {
        throw new Error(`${error.text} (shorten the message)`);
      }
    }
    convo.fit = skip ? { model, skip } : undefined;
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    const parser = sseParser(onData);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.end();
  } catch (err) {
    if (controller.signal.aborted) {
      message.stopped = true;
    } else {
      if (!message.content && convo.messages[convo.messages.length - 1] === message) {
        convo.messages.pop();
      }
      failed = unreachable(err) ? "Cannot reach the server: is `llmgate serve` running?" : err.message;
      convo.messages.push({ role: "error", content: failed });
    }
  } finally {
    controller.abort(); // no-op when the stream ended; otherwise the server stops generating
    running = null;
    messages.removeAttribute("aria-busy");
    const tokens = usage ? usage.completion_tokens : null;
    message.stats = {
      tokens,
      approx: tokens === null && pieces ? pieces : null,
      ttft: first !== null ? first - started : null,
      rate: tokens && tokens > 1 && last > first ? ((tokens - 1) * 1000) / (last - first) : null,
    };
    render();
    save();
    const stats = formatStats(message.stats);
    const left = skip ? ` · ${skip} older exchange${skip > 1 ? "s" : ""} left out to fit the model's window` : "";
    if (message.stopped) setStatus("Stopped");
    else if (failed) setStatus(`Answer interrupted: ${failed}`);
    else setStatus(stats ? `Answer complete: ${stats}${left}` : "");
    $("prompt").focus();
  }
}

function showError(convo, text, rerender = true) {
  convo.messages.push({ role: "error", content: text });
  save();
  if (rerender) render();
}

function regenerate() {
  const convo = currentConversation();
  if (running) return;
  while (convo.messages.length && convo.messages[convo.messages.length - 1].role !== "user") convo.messages.pop();
  if (convo.messages.length) answer(convo);
}

function editLast(convo) {
  const index = lastUserIndex(convo);
  if (index < 0 || running) return;
  editing = { convo, index }; // the history is cut only when the edit is sent (Esc cancels)
  const prompt = $("prompt");
  prompt.value = convo.messages[index].content;
  setStatus("Editing your last message: Enter resends, Esc cancels");
  autosize();
  prompt.focus();
}

// -- wiring ----------------------------------------------------------------------------------

function autosize() {
  const prompt = $("prompt");
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

function openSidebar() {
  $("app").classList.add("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "true");
}

function closeSidebar() {
  $("app").classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

function bindSetting(id, key, format = (v) => v) {
  const input = $(id);
  const output = $(`${id}-value`);
  input.value = state.settings[key];
  if (output) output.textContent = format(input.value);
  input.addEventListener("input", () => {
    state.settings[key] = input.value;
    if (output) output.textContent = format(input.value);
    save();
  });
}

function init() {
  bindSetting("system-prompt", "system");
  bindSetting("max-tokens", "max_tokens");
  bindSetting("temperature", "temperature");
  bindSetting("top-p", "top_p");
  const key = $("api-key");
  key.value = state.apiKey;
  if (state.apiKey) $("api-key-row").hidden = false;
  key.addEventListener("change", () => {
    state.apiKey = key.value.trim();
    save();
    loadModels();
  });
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    save();
  });
  $("new-chat").addEventListener("click", () => {
    if (running) return;
    let convo = state.conversations.find((c) => c.messages.length === 0);
    if (!convo) {
      convo = { id: newId(), title: "New chat", messages: [] };
      state.conversations.unshift(convo);
    }
    state.current = convo.id;
    save();
    closeSidebar();
    render();
    $("prompt").focus();
  });
  $("toggle-sidebar").addEventListener("click", (event) => {
    event.stopPropagation();
    if ($("app").classList.contains("sidebar-open")) {
      closeSidebar();
    } else {
      openSidebar();
      if (getComputedStyle($("close-sidebar")).display !== "none") $("close-sidebar").focus();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && $("app").classList.contains("sidebar-open")) closeSidebar();
  });
  $("close-sidebar").addEventListener("click", closeSidebar);
  document.querySelector("main.chat").addEventListener("click", () => {
    if ($("app").classList.contains("sidebar-open")) closeSidebar();
  });
  const prompt = $("prompt");
  prompt.addEventListener("input", autosize);
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && editing) {
      editing = null;
      prompt.value = "";
      autosize();
      setStatus("");
      return;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || running) return;
    prompt.value = "";
    autosize();
    send(text);
  });
  $("stop").addEventListener("click", () => {
    if (running) running.controller.abort();
  });
  render();
  loadModels();
  prompt.focus();
}

document.addEventListener("DOMContentLoaded", init);
