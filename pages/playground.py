from urllib.parse import urlsplit

import streamlit as st

from core import labels, models
from core.access import demo_links
from core.deploy import releases
from core.datasets import versions
from core.evaluation import inference, votes
from core.playground import conversations, playground
from pages.common import _, actor, can, fail, label, md, project, say

who = actor()
demo = who.kind == "demo"
st.title(_("Playground") + (" — " + (who.grant.get("title") or _("demo")) if demo else ""))
if demo:
    st.caption(_("Ask the tuned model a question. This page shows only the models of this demo link; nothing here "
                 "changes the studio."))
else:
    st.caption(_("Chat with a tuned run, its base model or the default model; the answer streams as it is "
                 "generated. Each model answers from its own inference worker, which the job scheduler counts on "
                 "its GPU and stops when idle."))

# a client's link: its models as the client may see them (core.playground.demo_view), nothing of the studio's ids
offered = playground.demo_view(who)["models"] if demo else playground.models_for(who, project())
if not offered:
    st.info(_("No finished runs yet.") if demo else _("Train a run on the Train page first."))
    if demo:
        st.stop()
targets = playground.targets_for(who, None if demo else project(), offered)
if not targets:
    st.stop()
by_id = {t["id"]: {**t, "label": say(t["label"])} for t in targets}
by_run = {} if demo else {m["run_id"]: m for m in offered}

chats = st.session_state.setdefault("chats", {})   # target id → [{"role", "content"}, …]


def _decoding_settings(where) -> inference.Decoding:
    with where.expander(_("System prompt and decoding")):
        system = st.text_area(_("System prompt (optional)"), key="system", max_chars=playground.MAX_SYSTEM_CHARS,
                              placeholder=_("You are the customer care assistant of Sao Viet."))
        c1, c2, c3 = st.columns(3)
        temperature = c1.slider(_("Temperature (0: greedy)"), 0.0, 1.5, 0.0, 0.05, key="temperature")
        top_p = c2.slider(_("Top-p"), 0.05, 1.0, 1.0, 0.05, key="top_p")
        max_new = c3.slider(_("Max new tokens"), 16, 512, 128, 16, key="max_new")
    st.session_state["_system"] = system.strip() or None
    return inference.Decoding(max_new_tokens=max_new, temperature=temperature, top_p=top_p)


def _kept(pieces, into: list[str]):
    """The pieces as they come, kept in ``into`` (raw), shown escaped (a model's text is data, not markdown)."""
    for piece in pieces:
        into.append(piece)
        yield md(piece)


def chat() -> None:
    target = by_id[st.selectbox(_("Model"), list(by_id), format_func=lambda i: by_id[i]["label"], key="chat_model")]
    run = by_run.get(target.get("run_id"))
    if run and target["kind"] == "run":
        g1, g2, g3 = st.columns(3)
        g1.metric(_("Gate"), _("PASS") if run["releasable"] else _("not releasable"))
        g2.metric(_("BLEU"), f"{run['bleu']:.3f}" if run["bleu"] is not None else "–")
        g3.metric(_("ROUGE-L"), f"{run['rouge_l']:.3f}" if run["rouge_l"] is not None else "–")
        st.caption(say(run["reason"]))
    elif target["kind"] == "demo":   # the verdict written for a client
        g1, g2, g3 = st.columns(3)
        g1.metric(_("Gate"), _("PASS") if target["releasable"] else _("not releasable"))
        g2.metric(_("BLEU"), f"{target['bleu']:.3f}" if target["bleu"] is not None else "–")
        g3.metric(_("ROUGE-L"), f"{target['rouge_l']:.3f}" if target["rouge_l"] is not None else "–")
        st.caption(say(target["verdict"]))
    decoding = _decoding_settings(st)
    history = chats.setdefault(target["id"], [])
    pending = st.session_state.pop("_pending", None)   # an answer cut short by Stop (or by leaving the page)
    if pending and pending["target"] == target["id"] and pending["pieces"]:
        history.append({"role": "assistant", "content": "".join(pending["pieces"]).strip(), "stopped": True})
    for turn in history:
        with st.chat_message(turn["role"]):
            if not turn["content"]:   # an answer the model ended at once: said, not an empty bubble
                st.text(_("(empty answer)"))
            else:
                st.markdown(md(turn["content"]) + (" " + _("*(stopped)*") if turn.get("stopped") else ""))

    asked = None
    prompts = who.grant.get("prompts", []) if demo else []
    if prompts and not history:
        st.caption(_("Demo prompts"))
        for n, text in enumerate(prompts):
            if st.button(text, key=f"demo-prompt-{n}"):
                asked = text
    typed = st.chat_input(_("Your message"), max_chars=playground.MAX_QUESTION_CHARS)
    asked = typed or asked
    if history and st.button(_("Clear the conversation")):
        chats[target["id"]] = []
        st.rerun()
    if not demo and not asked:
        if _saved_conversations(target, history, decoding):
            return
    if not asked:
        return
    history.append({"role": "user", "content": asked})
    with st.chat_message("user"):
        st.markdown(md(asked))
    with st.chat_message("assistant"):
        st.button(_("Stop"), key="stop")   # a click reruns the page, which closes the stream: the worker stops
        pieces: list[str] = []
        st.session_state["_pending"] = {"target": target["id"], "pieces": pieces}
        try:
            with st.spinner(_("Waiting for the model (its inference worker starts if it is not running) …")):
                stream = playground.stream_target(target, [{"role": t["role"], "content": t["content"]} for t in history],
                                                  st.session_state["_system"], decoding, actor=who,
                                                  project=None if demo else project())
                first = next(stream, None)
            if first is None:
                st.text(_("(empty answer)"))
            else:
                st.write_stream(_kept(_chain(first, stream), pieces))
        except (playground.PlaygroundError, PermissionError) as exc:  # a model that will not load: one message
            st.session_state.pop("_pending", None)
            history.pop()
            if demo:   # the client reads what it may: no job, no file
                st.error(say(playground.client_message(exc)))
            else:
                fail(exc)
            return
    st.session_state.pop("_pending", None)
    history.append({"role": "assistant", "content": "".join(pieces)})
    st.rerun()


def _saved_conversations(target: dict, history: list[dict], decoding) -> bool:
    """Save this conversation as a demo script, or replay a saved one with this model (its questions asked
    again, each answer streamed). True when a replay ran (the page reruns after it)."""
    here = project()
    saved = conversations.list_saved(who, here, limit=100)
    with st.expander(_("Saved conversations: demo scripts for a client")):
        if history and can("demo.create"):
            c1, c2 = st.columns([3, 1])
            title = c1.text_input(_("Title of this conversation"), key="conv-title")
            if c2.button(_("Save it"), key="conv-save"):
                try:
                    conv = conversations.save(title, [{"role": t["role"], "content": t["content"]} for t in history],
                                              model=target["id"], system=st.session_state["_system"], actor=who,
                                              project=here)
                    st.success(_("Saved as {id}: a demo link can offer its questions "
                                 "(`python -m core demo create --conversation {id}`).").format(id=conv["id"]))
                    saved = [conv] + saved
                except (conversations.ConversationError, PermissionError) as exc:
                    fail(exc)
        if not saved:
            st.caption(_("No saved conversations in this project yet."))
            return False
        saved_by_id = {c["id"]: c for c in saved}
        pick = st.selectbox(_("Saved conversation"), list(saved_by_id), key="conv-pick",
                            format_func=lambda i: _("{title} ({turns} questions, {id})").format(
                                title=saved_by_id[i]["title"], turns=len(conversations.questions(saved_by_id[i])), id=i))
        if not st.button(_("Replay it with this model"), key="conv-replay"):
            return False
    conv = saved_by_id[pick]
    replayed: list[dict] = []
    try:
        for n, question, pieces in conversations.replay(conv, target, actor=who, project=here, decoding=decoding,
                                                        system=st.session_state["_system"]):
            with st.chat_message("user"):
                st.markdown(md(question))
            with st.chat_message("assistant"):
                kept: list[str] = []
                st.write_stream(_kept(pieces, kept))
            replayed += [{"role": "user", "content": question}, {"role": "assistant", "content": "".join(kept)}]
    except (playground.PlaygroundError, PermissionError) as exc:
        fail(exc)
    chats[target["id"]] = replayed
    return True


def _chain(first: str, rest):
    yield first
    yield from rest


def _stream_two(a: dict, b: dict, question: str, decoding, columns, titles: tuple[str, str]) -> dict[str, str]:
    """Two answers at once: both workers started first, then both streams consumed in threads, their
    pieces put on one queue and drawn here, in the script's thread, into one placeholder per column."""
    slots, texts, failed = {}, {"a": [], "b": []}, {}
    for name, target, col, title in (("a", a, columns[0], titles[0]), ("b", b, columns[1], titles[1])):
        col.markdown(f"**{md(title)}**")   # a model's label is data: escaped
        slots[name] = col.empty()
        try:
            with col:
                with st.spinner(_("Starting its inference worker …")):
                    playground.prepare(target, actor=who, project=project())
        except (playground.PlaygroundError, PermissionError) as exc:
            failed[name] = exc
    messages = [{"role": "user", "content": question}]
    system = st.session_state["_system"]
    streams = {name: playground.stream_target(t, messages, system, decoding, actor=who, project=project())
               for name, t in (("a", a), ("b", b)) if name not in failed}
    for name, exc in failed.items():
        with slots[name].container():
            fail(exc)
    for name, piece, error in playground.side_by_side(streams):
        if error is not None:
            failed[name] = error
            with slots[name].container():
                fail(error)
        elif piece:
            texts[name].append(piece)
            slots[name].markdown(md("".join(texts[name])))
    return {name: "".join(parts) for name, parts in texts.items() if name not in failed}


def side() -> None:
    ids = list(by_id)
    default_b = next((i for i, t in by_id.items() if t["kind"] == "gguf"), ids[min(1, len(ids) - 1)])
    c1, c2 = st.columns(2)
    a = c1.selectbox(_("Left model"), ids, format_func=lambda i: by_id[i]["label"], key="side_a")
    b = c2.selectbox(_("Right model"), ids, index=ids.index(default_b), format_func=lambda i: by_id[i]["label"],
                     key="side_b")
    decoding = _decoding_settings(st)
    question = st.text_area(_("Question / instruction"), "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?",
                            key="side_q", max_chars=playground.MAX_QUESTION_CHARS)
    if st.button(_("Ask both"), type="primary") and question.strip():
        cols = st.columns(2)
        answers = _stream_two(by_id[a], by_id[b], question.strip(), decoding, cols,
                              (by_id[a]["label"], by_id[b]["label"]))
        st.session_state["side_last"] = {"question": question, "a": a, "b": b,
                                         **{f"{k}_answer": v for k, v in answers.items()}}


def _collect(a: dict, b: dict, question: str, decoding) -> list[str]:
    """Both answers whole (for a blind vote nothing streams: the speed of a column would give its model away)."""
    for t in (a, b):
        playground.prepare(t, actor=who, project=project())
    messages = [{"role": "user", "content": question}]
    streams = {name: playground.stream_target(t, messages, st.session_state["_system"], decoding, actor=who,
                                              project=project()) for name, t in (("a", a), ("b", b))}
    texts = {"a": [], "b": []}
    for name, piece, error in playground.side_by_side(streams):
        if error is not None:
            raise error
        if piece:
            texts[name].append(piece)
    return ["".join(texts["a"]), "".join(texts["b"])]


def blind() -> None:
    ids = list(by_id)
    default_b = next((i for i, t in by_id.items() if t["kind"] == "gguf"), ids[min(1, len(ids) - 1)])
    c1, c2 = st.columns(2)
    a = c1.selectbox(_("Model 1"), ids, format_func=lambda i: by_id[i]["label"], key="blind_a")
    b = c2.selectbox(_("Model 2"), ids, index=ids.index(default_b), format_func=lambda i: by_id[i]["label"], key="blind_b")
    decoding = _decoding_settings(st)
    st.caption(_("The two answers are shown without their models, in random order; pick the better one or a tie. "
                 "The vote is recorded under your name; the Evaluate page shows the win rates."))
    held = [v for v in versions.list_versions(who, project()) if v.get("rows_test")]
    if held:
        d1, d2 = st.columns([3, 1])
        version = d1.selectbox(_("Draw the prompt from the held-out split of"), [v["id"] for v in held], key="blind_version")
        if d2.button(_("Draw a prompt")):
            drawn = votes.held_out_prompts(version, 1, actor=who)
            if drawn:
                st.session_state["blind_q"], st.session_state["blind_drawn"] = drawn[0]["prompt"], drawn[0]
    st.session_state.setdefault("blind_q", "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?")
    prompt = st.text_area(_("Prompt"), key="blind_q")   # a drawn prompt may be longer: core says so
    if st.button(_("Get two unlabelled answers"), type="primary") and prompt.strip():
        if a == b:
            st.warning(_("Pick two different models."))
        else:
            try:
                with st.spinner(_("Both models are answering …")):
                    answers = _collect(by_id[a], by_id[b], prompt.strip(), decoding)
                drawn = st.session_state.get("blind_drawn") or {}
                source = drawn.get("source") if drawn.get("prompt") == prompt else None
                st.session_state["blind"] = {"prompt": prompt.strip(), "models": [a, b], "answers": answers,
                                             "order": list(votes.shown_order()), "source": source}
            except (playground.PlaygroundError, PermissionError) as exc:
                fail(exc)
    pending = st.session_state.get("blind")
    if not pending:
        return
    order = pending["order"]
    cols = st.columns(2)
    for n, (col, side) in enumerate(zip(cols, order)):
        col.markdown(_("**Answer {n}**").format(n=n + 1))
        col.text(pending["answers"][side] or _("(empty answer)"))
    v1, v2, v3 = st.columns(3)
    pick = "a" if v1.button(_("Answer 1 is better")) else "b" if v2.button(_("Answer 2 is better")) else \
        "tie" if v3.button(_("Tie")) else None
    if pick:
        first, second = order
        try:
            votes.record(pending["prompt"], pending["models"][first], pending["models"][second],
                         pending["answers"][first], pending["answers"][second], pick, actor=who, project=project(),
                         source=pending.get("source"))
        except (votes.VoteError, PermissionError) as exc:
            fail(exc)
            return
        del st.session_state["blind"]
        st.success(_("Vote recorded. Answer 1 was {first}; answer 2 was {second}.")
                   .format(first=by_id[pending["models"][first]]["label"], second=by_id[pending["models"][second]]["label"]))


MODES = {"Chat": _("Chat"), "Side by side": _("Side by side"), "Blind vote": _("Blind vote")}  # values stay English
modes = ["Chat"] if demo else ["Chat", "Side by side"] + (["Blind vote"] if can("votes.record") else [])
mode = st.radio(_("Mode"), modes, format_func=MODES.get, horizontal=True, label_visibility="collapsed", key="mode") if len(modes) > 1 else "Chat"
if mode == "Chat":
    chat()
elif mode == "Side by side":
    side()
elif mode == "Blind vote":
    blind()

if not demo and can("demo.create"):
    with st.expander(_("Create a demo link for a client")):
        with st.form("demo-link"):
            run_ids = st.multiselect(_("Runs it shows"), [m["run_id"] for m in offered], default=[m["run_id"] for m in offered[:1]])
            rels = [r for r in releases.list_releases(who, project(), include_deleted=False)]
            rel_ids = st.multiselect(_("Releases it shows"), [r["id"] for r in rels],
                                     format_func=lambda i: next(f"{r['name']}:{r['tag']} ({i})" for r in rels if r["id"] == i))
            d1, d2 = st.columns(2)
            title = d1.text_input(_("Title the client sees"), placeholder=_("Customer care assistant — trial"))
            days = d2.number_input(_("Expires after (days)"), 0.01, 90.0, 7.0)
            asked_here = [t["content"].replace("\n", " ") for t in chats.get(st.session_state.get("chat_model"), [])
                          if t["role"] == "user"]
            demo_prompts = st.text_area(_("Demo prompts (one per line)"), "\n".join(asked_here),
                                        help=_("The questions of the conversation above, to replay for the client; "
                                               "edit them as you like."))
            if st.form_submit_button(_("Create the link")):
                try:
                    link, token = demo_links.create(actor=who, runs=run_ids, releases=rel_ids, days=float(days),
                                                    prompts=demo_prompts.splitlines(), title=title or None)
                    st.success(_("Demo link {id} until {expires:%Y-%m-%d %H:%M}. Copy it now: it is shown once. "
                                 "Revoke it on the Admin page or with `python -m core demo revoke {id}`.")
                               .format(id=link["id"], expires=link["expires_at"]))
                    here_url = urlsplit(getattr(st.context, "url", None) or "")
                    site = f"{here_url.scheme}://{here_url.netloc}" if here_url.netloc else ""
                    st.code(f"{site}/?demo={token}", language=None)
                except (demo_links.DemoLinkError, PermissionError) as exc:
                    fail(exc)

if not demo:
    live = playground.servers(actor=who)
    if live:
        with st.expander(_("Inference workers ({count})").format(count=len(live))):
            st.dataframe([{_("job"): j["id"], _("state"): label(labels.JOB_STATES, j["state"]), _("slot"): j["slot"],
                           _("model"): models.display_name(j["config"]["base_model"]),
                           _("adapter"): j["config"].get("adapter_dir") or _("(none)"),
                           _("weights GiB"): j["server"].get("weights_gib"), _("GPU GiB"): j["server"].get("gpu_gib"),
                           _("requests"): j["server"].get("requests"), _("idle s"): j["server"].get("idle_for_s")}
                          for j in live], hide_index=True)
