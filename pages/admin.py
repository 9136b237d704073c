import streamlit as st

from core import secrets
from core.access import accounts, audit, demo_links, projects, web
from core.datasets.generation import documents, endpoints
from core.access.principal import ROLES
from pages.common import _, actor, fail, flash, say

from core import base_models
from core.jobs import ray_cluster

st.title(_("Admin"))
st.caption(_("Accounts and roles, projects, demo links and the audit log. Local accounts are added with the CLI "
             "(`python -m core users add NAME --role ROLE`: the password is typed there, never in a browser)."))
flash()
who = actor()
users_tab, projects_tab, endpoints_tab, models_tab, ray_tab, demo_tab, audit_tab = st.tabs(
    [_("Accounts"), _("Projects"), _("Endpoints"), _("Base models"), _("Ray cluster"), _("Demo links"), _("Audit log")])

with users_tab:
    users = accounts.list_users(who)
    st.dataframe([{_("account"): u["name"], _("kind"): u["kind"], _("role"): u["role"], _("disabled"): u["disabled"],
                   _("projects"): ", ".join(u["projects"]) if u["projects"] is not None else _("(all)"),
                   _("last sign-in"): u["last_sign_in"], _("added by"): u["created_by"]} for u in users],
                 hide_index=True)
    with st.form("role"):
        c1, c2, c3 = st.columns(3)
        name = c1.selectbox(_("Account"), [u["name"] for u in users] or ["(none)"],
                            format_func=lambda n: n if users else _("(none)"))
        role = c2.selectbox(_("Role"), list(reversed(ROLES)))
        scope = c3.multiselect(_("Limit to projects (none: every project)"),
                               [p["name"] for p in projects.list_projects(who)])
        b1, b2, b3 = st.columns(3)
        set_role = b1.form_submit_button(_("Set role"))
        set_scope = b2.form_submit_button(_("Set projects"))
        disable = b3.form_submit_button(_("Disable"))
    try:
        if set_role:
            accounts.set_role(name, role, actor=who)
            flash(_("{name} is now {role}.").format(name=name, role=role))
            st.rerun()
        if set_scope:
            accounts.set_projects(name, scope or None, actor=who)
            flash(_("{name} sees {projects}.").format(name=name, projects=", ".join(scope) if scope else _("every project")))
            st.rerun()
        if disable:
            accounts.disable(name, actor=who)
            flash(_("{name} is disabled; its sessions are signed out.").format(name=name))
            st.rerun()
    except (accounts.AccountError, PermissionError) as exc:
        fail(exc)
    with st.form("oidc"):
        st.caption(_("A company account (OIDC, `st.login`): give its email a role. An email without an account here "
                     "gets no access."))
        o1, o2 = st.columns(2)
        email = o1.text_input(_("Email"))
        o_role = o2.selectbox(_("Role"), list(reversed(ROLES)), index=3, key="oidc-role")
        if st.form_submit_button(_("Add company account")):
            try:
                accounts.add_user(email, o_role, actor=who, oidc=True)
                flash(_("{email} may sign in as {role}.").format(email=email, role=o_role))
                st.rerun()
            except (accounts.AccountError, PermissionError) as exc:
                fail(exc)

with projects_tab:
    st.dataframe(projects.list_projects(who), hide_index=True)
    with st.form("project"):
        p1, p2 = st.columns(2)
        pname = p1.text_input(_("New project (one per client)"), placeholder="acme-hopdong")
        title = p2.text_input(_("Title"), placeholder="ACME — hợp đồng")
        if st.form_submit_button(_("Add project")):
            try:
                projects.add_project(pname, title or None, actor=who)
                flash(_("Project {name} added.").format(name=pname))
                st.rerun()
            except (projects.ProjectError, PermissionError) as exc:
                fail(exc)

with endpoints_tab:
    st.caption(_("The LLM endpoints pair generation may call. An endpoint added here must be on a host the server "
                 "allows and may use only a key the server holds, chosen by name; endpoints with their own key are "
                 "defined in `{path}` (docs/datasets.md).").format(path=secrets.secrets_path()))
    try:
        listed = [e.public() for e in endpoints.configured()]
        hosts, keys = secrets.allowed_hosts(), secrets.key_names()
    except (documents.GenerateError, secrets.SecretsError) as exc:
        fail(exc)
        listed, hosts, keys = [], [], []
    if listed:
        st.dataframe(listed, hide_index=True)
    else:
        st.info(_("No endpoint yet: generation can use the default model (local) only."))
    st.caption(_("Allowed hosts: {hosts} · named keys: {keys}").format(hosts=", ".join(hosts) or _("none"),
                                                                       keys=", ".join(keys) or _("none")))
    with st.form("endpoint"):
        e1, e2, e3 = st.columns(3)
        e_name = e1.text_input(_("Name"), placeholder="vllm-noibo")
        e_url = e2.text_input(_("Base URL (on an allowed host)"), placeholder="http://vllm.noibo.lan:8000/v1")
        e_model = e3.text_input(_("Model"))
        e4, e5, e6, e7 = st.columns(4)
        e_key = e4.selectbox(_("Key"), ["(none)"] + keys, format_func=lambda k: _("(none)") if k == "(none)" else k)
        e_in = e5.number_input(_("Price per 1M input tokens"), 0.0, 1000.0, 0.0)
        e_out = e6.number_input(_("Price per 1M output tokens"), 0.0, 1000.0, 0.0)
        e_struct = e7.checkbox(_("Send the JSON schema"), help=_("llama.cpp turns it into a grammar"))
        if st.form_submit_button(_("Save endpoint")):
            try:
                endpoints.add(e_name, e_url, e_model, key=None if e_key == "(none)" else e_key,
                              price_in_per_mtok=e_in, price_out_per_mtok=e_out, structured=e_struct, actor=who)
                flash(_("Endpoint {name} saved.").format(name=e_name))
                st.rerun()
            except (documents.GenerateError, PermissionError) as exc:
                fail(exc)
    ours = [e["name"] for e in listed if e["source"] == endpoints.FROM_STUDIO]
    if ours:
        with st.form("endpoint-remove"):
            gone = st.selectbox(_("Endpoint added here"), ours)
            if st.form_submit_button(_("Remove endpoint")):
                try:
                    endpoints.remove(gone, actor=who)
                    flash(_("Endpoint {name} removed.").format(name=gone))
                    st.rerun()
                except (documents.GenerateError, PermissionError) as exc:
                    fail(exc)

with models_tab:
    st.caption(_("The base models a run, an evaluation, the playground or the Datasets page may load: a folder under "
                 "{folders}, or one allowed here (a model hub name such as unsloth/gemma-4-E4B-it, or a folder on the "
                 "server). Each change is in the audit log; `python -m core models allow NAME` does the same.")
               .format(folders=", ".join(dict.fromkeys(str(f) for f in base_models.folders()[:2]))))
    allowed_models = base_models.allowed()
    if allowed_models:
        st.dataframe([{_("allowed"): n} for n in allowed_models], hide_index=True)
    else:
        st.info(_("Nothing else is allowed yet."))
    with st.form("base-model"):
        model_name = st.text_input(_("Model hub name or folder"), placeholder="unsloth/gemma-4-E4B-it")
        m1, m2 = st.columns(2)
        allow_model = m1.form_submit_button(_("Allow"))
        disallow_model = m2.form_submit_button(_("Take back"))
    try:
        if allow_model:
            base_models.allow(model_name, actor=who)
            flash(_("{name} may be loaded as a base model.").format(name=model_name.strip()))
            st.rerun()
        if disallow_model:
            base_models.disallow(model_name, actor=who)
            flash(_("{name} is no longer allowed as a base model.").format(name=model_name.strip()))
            st.rerun()
    except (ValueError, PermissionError) as exc:
        fail(exc)

with ray_tab:
    st.caption(_("With a Ray cluster's address, training, evaluation, export and the measuring jobs run on whichever "
                 "node has the resources they ask; the studio's home must be on a filesystem every node mounts at "
                 "the same path (docs/scale.md). Checked (the cluster must answer) and in the audit log; "
                 "`python -m core jobs ray ADDRESS` does the same, and VITUNE_RAY_ADDRESS overrides it."))
    try:
        ray_now = ray_cluster.address()
        st.info(say(ray_cluster.describe_setting(ray_now, ray_cluster.resource(), bool(ray_now) and ray_cluster.ship())))
    except ValueError as exc:
        fail(exc)
    with st.form("ray"):
        r1, r2 = st.columns(2)
        ray_address = r1.text_input(_("Ray dashboard address"), placeholder="http://10.0.0.5:8265")
        ray_resource = r2.text_input(_("Custom resource a job asks (empty: GPUs)"), placeholder="vitune_worker")
        ray_ship = st.checkbox(_("The nodes do not see the studio's home: ship each job's folder to its node and "
                                 "its files back (the home must be on the Ray head node)"))
        b1, b2 = st.columns(2)
        use_ray = b1.form_submit_button(_("Use this cluster"))
        no_ray = b2.form_submit_button(_("Back to local workers"))
    try:
        if use_ray:
            flash(say(ray_cluster.set_cluster(ray_address, ray_resource, actor=who, shipped=ray_ship)))
            st.rerun()
        if no_ray:
            flash(say(ray_cluster.set_cluster(None, actor=who)))
            st.rerun()
    except (ValueError, ray_cluster.RayError, PermissionError) as exc:
        fail(exc)

with demo_tab:
    links = demo_links.list_links(who)
    if not links:
        st.caption(_("No demo links yet (create one on the Playground page)."))
    else:
        st.dataframe([{_("link"): d["id"], _("project"): d["project"], _("title"): d["title"],
                       _("runs"): ", ".join(d["runs"]), _("releases"): ", ".join(d["releases"]),
                       _("expires"): d["expires_at"], _("revoked"): d["revoked_at"], _("by"): d["created_by"],
                       _("last used"): d["last_used_at"]} for d in links], hide_index=True)
        live = [d["id"] for d in links if not d["revoked_at"]]
        if live:
            with st.form("revoke"):
                pick = st.selectbox(_("Demo link"), live)
                if st.form_submit_button(_("Revoke")):
                    try:
                        demo_links.revoke(pick, actor=who)
                        flash(_("Demo link {link} revoked: it shows nothing from now on.").format(link=pick))
                        st.rerun()
                    except (demo_links.DemoLinkError, PermissionError) as exc:
                        fail(exc)

with audit_tab:
    f1, f2, f3 = st.columns(3)
    by = f1.text_input(_("Who (account)"))
    what = f2.text_input(_("What (action, e.g. gate. or release.)"))
    obj = f3.text_input(_("Object (id)"))
    filters = {"actor_name": by or None, "action": what or None, "subject": obj or None}
    rows = audit.entries(who, limit=500, **filters)
    st.dataframe(rows, hide_index=True)
    # the CSV is made when the link is followed, for this signed-in admin's browser alone (core.access.web)
    ticket = st.session_state.get("audit-export")
    if not ticket or ticket[0] != filters or not web.ticket_valid(ticket[1]):
        ticket = (filters, web.export_ticket(who, dict(st.context.cookies), **filters))
        st.session_state["audit-export"] = ticket
    label = _("Download as CSV")   # outside the f-string, where the catalogue's extraction finds it
    st.html(f'<a href="/auth/export/{ticket[1]}" download="audit-log.csv" id="audit-csv">{label}</a>')
