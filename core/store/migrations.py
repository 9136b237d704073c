"""The studio database's schema, as numbered migrations, in the manner of Simon Willison's ``llm``: one
function each (``_m004_evaluation_details`` is migration 4), listed in ``MIGRATIONS``. ``migrate`` applies
those a database has not had, in order, each in its own transaction, and records them in
``schema_migrations``; ``core.store.connection`` runs it on a process's first connection to a file.
A schema change is a new function here, with the next number, added to ``MIGRATIONS``.
"""
from __future__ import annotations

from datetime import datetime, timezone

import duckdb


def _m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE dataset_versions (
            id            VARCHAR PRIMARY KEY,
            name          VARCHAR NOT NULL,
            parent_id     VARCHAR,
            content_hash  VARCHAR NOT NULL,
            source        VARCHAR,
            rows_total    INTEGER NOT NULL,
            rows_train    INTEGER NOT NULL,
            rows_test     INTEGER NOT NULL,
            path          VARCHAR NOT NULL,
            lineage       JSON,
            report        JSON,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE job_seq START 1;
        CREATE TABLE jobs (
            id            INTEGER PRIMARY KEY DEFAULT nextval('job_seq'),
            kind          VARCHAR NOT NULL,          -- train | evaluate | export
            owner         VARCHAR,
            state         VARCHAR NOT NULL,          -- queued | running | succeeded | failed | cancelled
            config        JSON NOT NULL,
            run_id        VARCHAR,
            dataset_version_id VARCHAR,
            slot          VARCHAR,
            pid           INTEGER,
            job_dir       VARCHAR NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL,
            started_at    TIMESTAMPTZ,
            finished_at   TIMESTAMPTZ,
            error         VARCHAR,
            log_tail      VARCHAR,
            result        JSON
        );
        CREATE TABLE runs (
            id            VARCHAR PRIMARY KEY,
            job_id        INTEGER NOT NULL,
            base_model    VARCHAR NOT NULL,
            dataset_version_id VARCHAR NOT NULL,
            prompt_format VARCHAR NOT NULL,
            config        JSON NOT NULL,
            run_dir       VARCHAR NOT NULL,
            adapter_dir   VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE metrics (
            run_id        VARCHAR NOT NULL,
            step          INTEGER NOT NULL,
            epoch         DOUBLE,
            loss          DOUBLE,
            learning_rate DOUBLE,
            grad_norm     DOUBLE,
            tokens_per_s  DOUBLE,
            ts            DOUBLE,
            PRIMARY KEY (run_id, step)
        );
        CREATE TABLE evaluations (
            id            VARCHAR PRIMARY KEY,
            job_id        INTEGER,
            run_id        VARCHAR,                   -- NULL: the base model alone
            base_model    VARCHAR NOT NULL,
            dataset_version_id VARCHAR NOT NULL,
            split         VARCHAR NOT NULL,
            n             INTEGER NOT NULL,
            bleu          DOUBLE NOT NULL,
            rouge_l       DOUBLE NOT NULL,
            passed        BOOLEAN NOT NULL,
            thresholds    JSON NOT NULL,
            decoding      JSON NOT NULL,
            duration_s    DOUBLE,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE evaluation_examples (
            evaluation_id VARCHAR NOT NULL,
            idx           INTEGER NOT NULL,
            instruction   VARCHAR,
            input         VARCHAR,
            reference     VARCHAR,
            prediction    VARCHAR,
            bleu          DOUBLE,
            rouge_l       DOUBLE,
            PRIMARY KEY (evaluation_id, idx)
        );
        CREATE TABLE releases (
            id            VARCHAR PRIMARY KEY,
            name          VARCHAR NOT NULL,
            tag           VARCHAR NOT NULL,
            run_id        VARCHAR NOT NULL,
            dataset_version_id VARCHAR,
            evaluation_id VARCHAR,
            thresholds    JSON,
            gguf_path     VARCHAR,
            gguf_sha256   VARCHAR,
            modelfile     VARCHAR,
            ollama_status VARCHAR,
            override_reason VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE audit_seq START 1;
        CREATE TABLE audit_log (
            id            INTEGER PRIMARY KEY DEFAULT nextval('audit_seq'),
            ts            TIMESTAMPTZ NOT NULL,
            actor         VARCHAR,
            action        VARCHAR NOT NULL,
            subject       VARCHAR,
            detail        JSON
        );
        CREATE TABLE settings (
            key           VARCHAR PRIMARY KEY,
            value         JSON NOT NULL
        );
        """
    )


def _m002_reviews(con: duckdb.DuckDBPyConnection) -> None:
    """Review samples of dataset versions (the guide's 10–15 % manual check) and their decisions."""
    con.execute(
        """
        CREATE TABLE reviews (
            id            VARCHAR PRIMARY KEY,
            dataset_version_id VARCHAR NOT NULL,
            kind          VARCHAR NOT NULL,          -- sample | bundled | inherited
            fraction      DOUBLE NOT NULL,
            seed          INTEGER NOT NULL,
            threshold     DOUBLE NOT NULL,
            sample_size   INTEGER NOT NULL,
            inherited_from VARCHAR,                  -- kind inherited: the parent version's review
            child_version_id VARCHAR,                -- the version made from this review's edits
            note          VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            completed_at  TIMESTAMPTZ
        );
        CREATE TABLE review_items (
            review_id     VARCHAR NOT NULL,
            idx           INTEGER NOT NULL,          -- position in the sample, from 1
            split         VARCHAR NOT NULL,          -- train | test
            row_index     INTEGER NOT NULL,          -- row in that split's Parquet file, from 0
            instruction   VARCHAR NOT NULL,
            input         VARCHAR NOT NULL,
            output        VARCHAR NOT NULL,
            decision      VARCHAR,                   -- approved | edited | rejected; NULL while pending
            edited        JSON,                      -- the pair as edited
            reviewer      VARCHAR,
            decided_at    TIMESTAMPTZ,
            PRIMARY KEY (review_id, idx)
        );
        """
    )


def _m004_evaluation_details(con: duckdb.DuckDBPyConnection) -> None:
    """Evaluations keep what a client asks about later: how they were produced, how fast, by whom,
    and the verdict's reason; examples keep a key that matches the same pair across evaluations."""
    for column, kind in (("prompt_format", "VARCHAR"), ("adapter_dir", "VARCHAR"), ("sample_limit", "INTEGER"),
                         ("generation_s", "DOUBLE"), ("scoring_s", "DOUBLE"), ("examples_per_s", "DOUBLE"),
                         ("gate_reason", "VARCHAR"), ("created_by", "VARCHAR")):
        con.execute(f"ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS {column} {kind}")
    con.execute("ALTER TABLE evaluation_examples ADD COLUMN IF NOT EXISTS pair_key VARCHAR")
    con.execute(
        """UPDATE evaluation_examples SET pair_key =
               md5(coalesce(instruction, '') || chr(31) || coalesce(input, '') || chr(31) || coalesce(reference, ''))
           WHERE pair_key IS NULL"""
    )


def _m005_release_lifecycle(con: duckdb.DuckDBPyConnection) -> None:
    """Releases keep their preflight report and quantization, and live on after delete or rollback."""
    con.execute(
        """
        ALTER TABLE releases ADD COLUMN quantization VARCHAR;
        ALTER TABLE releases ADD COLUMN preflight JSON;
        ALTER TABLE releases ADD COLUMN state VARCHAR DEFAULT 'active';   -- active | replaced | deleted
        ALTER TABLE releases ADD COLUMN rollback_of VARCHAR;
        ALTER TABLE releases ADD COLUMN deleted_by VARCHAR;
        ALTER TABLE releases ADD COLUMN deleted_at TIMESTAMPTZ;
        """
    )


def _m006_training_metrics(con: duckdb.DuckDBPyConnection) -> None:
    """Eval loss (on the test split) and peak GPU memory beside each training step."""
    con.execute("ALTER TABLE metrics ADD COLUMN IF NOT EXISTS eval_loss DOUBLE")
    con.execute("ALTER TABLE metrics ADD COLUMN IF NOT EXISTS gpu_mem_gib DOUBLE")


def _m007_team_access(con: duckdb.DuckDBPyConnection) -> None:
    """Team access: projects (one per client; every dataset version, run, evaluation, release and job
    belongs to one, existing rows to "default"), accounts and their sign-in sessions, client demo
    links, and the role and project of every audit row."""
    con.execute(
        """
        CREATE TABLE projects (
            name          VARCHAR PRIMARY KEY,
            title         VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE users (
            name          VARCHAR PRIMARY KEY,       -- a local account's name, or an OIDC account's email
            kind          VARCHAR NOT NULL,          -- local | oidc
            role          VARCHAR NOT NULL,          -- admin | engineer | reviewer | viewer
            password_hash VARCHAR,                   -- argon2id (local accounts only)
            projects      JSON,                      -- NULL: every project
            disabled      BOOLEAN NOT NULL DEFAULT false,
            failed_attempts INTEGER NOT NULL DEFAULT 0,
            locked_until  TIMESTAMPTZ,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            last_sign_in  TIMESTAMPTZ
        );
        CREATE TABLE sessions (
            token_hash    VARCHAR PRIMARY KEY,       -- sha256 of the cookie's token; the token is never stored
            user_name     VARCHAR NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL,
            expires_at    TIMESTAMPTZ NOT NULL,
            revoked_at    TIMESTAMPTZ
        );
        CREATE TABLE demo_links (
            id            VARCHAR PRIMARY KEY,
            token_hash    VARCHAR NOT NULL,          -- sha256 of the link's token
            project       VARCHAR NOT NULL,
            title         VARCHAR,
            runs          JSON NOT NULL,
            releases      JSON NOT NULL,
            prompts       JSON NOT NULL,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            expires_at    TIMESTAMPTZ NOT NULL,
            revoked_at    TIMESTAMPTZ,
            revoked_by    VARCHAR,
            last_used_at  TIMESTAMPTZ
        );
        ALTER TABLE audit_log ADD COLUMN role VARCHAR;
        ALTER TABLE audit_log ADD COLUMN project VARCHAR;
        """
    )
    con.execute("INSERT INTO projects VALUES ('default', 'Default project', 'migration 007', ?)", [now()])
    for table in ("dataset_versions", "runs", "evaluations", "releases", "jobs"):
        con.execute(f"ALTER TABLE {table} ADD COLUMN project VARCHAR DEFAULT 'default'")
        con.execute(f"UPDATE {table} SET project = 'default' WHERE project IS NULL")


def _m008_preference_votes(con: duckdb.DuckDBPyConnection) -> None:
    """Blind preference votes from the playground: a prompt, two models' answers (in the order they were
    shown), the voter's pick and who voted."""
    con.execute(
        """
        CREATE TABLE votes (
            id            VARCHAR PRIMARY KEY,
            project       VARCHAR NOT NULL DEFAULT 'default',
            prompt        VARCHAR NOT NULL,
            model_a       VARCHAR NOT NULL,          -- a playground target: run:ID, gguf:PATH, base:PATH, ollama:TAG
            model_b       VARCHAR NOT NULL,
            answer_a      VARCHAR NOT NULL,
            answer_b      VARCHAR NOT NULL,
            choice        VARCHAR NOT NULL CHECK (choice IN ('a', 'b', 'tie')),
            voter         VARCHAR NOT NULL,          -- the signed-in principal's name
            voter_role    VARCHAR,
            source        VARCHAR,                   -- typed | held-out:VERSION#IDX
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX votes_pair ON votes (project, model_a, model_b);
        """
    )


def _m009_word_scores(con: duckdb.DuckDBPyConnection) -> None:
    """Word-level BLEU and ROUGE-L (syllables joined into words by Vietnamese word segmentation,
    core.evaluation.words) beside the syllable scores, on evaluations and on every example, with the
    segmenter that made them: a second view, never gated. NULL where not computed (evaluations from
    before, or stored where the segmenter was not installed; ``evaluations.ensure_word_scores`` fills them)."""
    for column, kind in (("bleu_words", "DOUBLE"), ("rouge_l_words", "DOUBLE"), ("word_segmenter", "VARCHAR")):
        con.execute(f"ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS {column} {kind}")
    for column in ("bleu_words", "rouge_l_words"):
        con.execute(f"ALTER TABLE evaluation_examples ADD COLUMN IF NOT EXISTS {column} DOUBLE")


def _m010_saved_conversations(con: duckdb.DuckDBPyConnection) -> None:
    """Playground conversations kept as demo scripts: their turns, the model and system prompt they were had
    with; a demo link offers their questions, the playground replays them."""
    con.execute(
        """
        CREATE TABLE conversations (
            id            VARCHAR PRIMARY KEY,
            project       VARCHAR NOT NULL DEFAULT 'default',
            title         VARCHAR NOT NULL,
            model         VARCHAR,                   -- the playground target it was had with (run:ID, gguf:PATH…)
            system        VARCHAR,
            turns         JSON NOT NULL,             -- [{"role": "user"|"assistant", "content": text}, …]
            created_by    VARCHAR NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL
        );
        """
    )


def _m011_judge(con: duckdb.DuckDBPyConnection) -> None:
    """The LLM judge: one verdict per judged answer and judge — an evaluation's example (``example``, the evaluation,
    its idx), either answer of a blind vote (``vote``, the vote, 0 for answer_a and 1 for answer_b) or a
    reviewed dataset pair (``review``, the review, its idx) — a 1–5 score and a one-line reason, or the
    one-line reason there is none (``error``); and each judge run's meta: the judge, the rubric, the
    limits, what it asked, scored and spent."""
    con.execute(
        """
        CREATE TABLE judgements (
            kind          VARCHAR NOT NULL,          -- example | vote | review
            ref           VARCHAR NOT NULL,          -- evaluation id | vote id | review id
            part          INTEGER NOT NULL,          -- example idx | 0 (answer_a), 1 (answer_b) | review item idx
            score         INTEGER CHECK (score BETWEEN 1 AND 5),   -- NULL: not judged yet (error says why)
            reason        VARCHAR,
            error         VARCHAR,
            answer        VARCHAR,                   -- the judge's raw answer (cut), for a reader in doubt
            judge         VARCHAR NOT NULL,          -- local:MODEL or endpoint:NAME:MODEL
            rubric_version VARCHAR NOT NULL,
            judge_run     INTEGER,                   -- the judge job
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost          DOUBLE,
            judged_at     TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (kind, ref, part, judge, rubric_version)   -- a re-run fills what has no score
        );
        CREATE TABLE judge_runs (
            job_id        INTEGER PRIMARY KEY,
            kind          VARCHAR NOT NULL,          -- example | vote | review: what it judged
            ref           VARCHAR,                   -- the evaluation (kind example); NULL for votes, reviews
            project       VARCHAR NOT NULL DEFAULT 'default',
            judge         VARCHAR NOT NULL,
            endpoint      VARCHAR,                   -- the configured endpoint's name; NULL: the local model
            model         VARCHAR,
            base_url      VARCHAR,
            rubric_version VARCHAR NOT NULL,
            rubric_sha256 VARCHAR NOT NULL,
            max_items     INTEGER,
            max_cost      DOUBLE,
            items         INTEGER NOT NULL,          -- answers sent to it
            asked         INTEGER NOT NULL DEFAULT 0,
            scored        INTEGER NOT NULL DEFAULT 0,
            failed        INTEGER NOT NULL DEFAULT 0,
            tokens_in     INTEGER NOT NULL DEFAULT 0,
            tokens_out    INTEGER NOT NULL DEFAULT 0,
            cost          DOUBLE NOT NULL DEFAULT 0,
            stopped       VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        """
    )


def _m012_sign_in_guards(con: duckdb.DuckDBPyConnection) -> None:
    """Sign-in guards (issue 24): a company (OIDC) account bound to the (issuer, subject) of its first
    sign-in, and the counts that slow a password guesser down, per typed name and per client address,
    kept apart from the accounts so that a name without an account is counted as one with
    (core.access.accounts). users.failed_attempts and users.locked_until are no longer read."""
    con.execute(
        """
        ALTER TABLE users ADD COLUMN oidc_issuer VARCHAR;
        ALTER TABLE users ADD COLUMN oidc_subject VARCHAR;
        CREATE TABLE sign_in_throttle (
            key           VARCHAR PRIMARY KEY,       -- name:<typed name, at most 100 characters> | address:<client>
            failures      INTEGER NOT NULL,          -- attempts counted in a row (before each was checked)
            locked_until  TIMESTAMPTZ,               -- no attempt is checked before then
            last_failure  TIMESTAMPTZ NOT NULL
        );
        """
    )


def _m013_artifact_evaluations(con: duckdb.DuckDBPyConnection) -> None:
    """The artifact an evaluation judged (issue 28): the run's adapter on its HF base (``adapter``), an exported
    GGUF at its quantization through llama.cpp (``gguf``: the export job, the file and its sha256), or a release
    served by Ollama (``ollama``: the tag), and the backend it ran on (llama.cpp's device, threads, parallel
    sequences, tokens/s, or what it fell back to). Each release keeps the gate's record: the list of named checks
    it was judged on (``core.evaluation.gate.record``)."""
    for column, kind in (("target", "VARCHAR DEFAULT 'adapter'"), ("quantization", "VARCHAR"),
                         ("export_job_id", "INTEGER"), ("gguf_path", "VARCHAR"), ("gguf_sha256", "VARCHAR"),
                         ("ollama_model", "VARCHAR"), ("backend", "JSON")):
        con.execute(f"ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS {column} {kind}")
    con.execute("UPDATE evaluations SET target = 'adapter' WHERE target IS NULL")
    con.execute("ALTER TABLE releases ADD COLUMN IF NOT EXISTS gate_record JSON")


def _m014_sweeps(con: duckdb.DuckDBPyConnection) -> None:
    """Sweeps (issue 25): many training runs from one grid or list of settings, under one sweep id, each
    evaluated on its held-out split when its training is ingested (core.training.sweeps)."""
    con.execute(
        """
        CREATE TABLE sweeps (
            id            VARCHAR PRIMARY KEY,
            name          VARCHAR NOT NULL,
            project       VARCHAR NOT NULL DEFAULT 'default',
            dataset_version_id VARCHAR NOT NULL,
            spec          JSON NOT NULL,             -- the normalized spec: preset, settings, grid, runs, evaluate
            estimate      JSON,                      -- the count and the time estimate it started with
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            cancelled_at  TIMESTAMPTZ,               -- set: no evaluation is queued for it any more
            cancelled_by  VARCHAR
        );
        CREATE TABLE sweep_runs (
            sweep_id      VARCHAR NOT NULL,
            idx           INTEGER NOT NULL,          -- the run's place in the expanded grid
            run_id        VARCHAR NOT NULL UNIQUE,   -- an ordinary run (and training job) of the runs table
            params        JSON NOT NULL,             -- what this run varies
            PRIMARY KEY (sweep_id, idx)
        );
        """
    )


def _m015_retention(con: duckdb.DuckDBPyConnection) -> None:
    """What tuning broke (core.evaluation.retention): general Vietnamese answered by the base model, a tuned run
    and its GGUF, one row per (target, set) — the test split of the general data mixed into the run's version,
    or the general set that ships with the studio — with BLEU, ROUGE-L (syllables) and the perplexity of the
    reference answers (teacher-forced), and every example. ``set_key`` (the pairs evaluated, in order) ties a
    tuned result to the base result it is compared with."""
    con.execute(
        """
        CREATE TABLE retention_results (
            id            VARCHAR PRIMARY KEY,
            job_id        INTEGER,
            run_id        VARCHAR,                   -- the run the check is of (NULL: the base model alone)
            target        VARCHAR NOT NULL,          -- base | run | gguf
            quant         VARCHAR,                   -- target gguf: its quantization
            gguf          VARCHAR,                   -- target gguf: its file
            base_model    VARCHAR NOT NULL,
            prompt_format VARCHAR NOT NULL,
            set_name      VARCHAR NOT NULL,          -- general-test | shipped
            set_ref       VARCHAR,                   -- the general data's dataset version, or the shipped file
            set_key       VARCHAR NOT NULL,          -- sha256 of the pairs evaluated, in order, and the decoding
            n             INTEGER NOT NULL,
            bleu          DOUBLE NOT NULL,
            rouge_l       DOUBLE NOT NULL,
            perplexity    DOUBLE,                    -- exp(mean NLL per reference-answer token)
            answer_tokens INTEGER,
            decoding      JSON NOT NULL,
            duration_s    DOUBLE,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            project       VARCHAR NOT NULL DEFAULT 'default'
        );
        CREATE INDEX retention_results_run ON retention_results (run_id);
        CREATE INDEX retention_results_key ON retention_results (set_key, target);
        CREATE TABLE retention_examples (
            result_id     VARCHAR NOT NULL,
            idx           INTEGER NOT NULL,
            instruction   VARCHAR,
            input         VARCHAR,
            reference     VARCHAR,
            prediction    VARCHAR,
            bleu          DOUBLE,
            rouge_l       DOUBLE,
            nll           DOUBLE,                    -- mean NLL per token of the reference answer
            tokens        INTEGER,                   -- its tokens
            PRIMARY KEY (result_id, idx)
        );
        """
    )


def _m016_quant_cost(con: duckdb.DuckDBPyConnection) -> None:
    """The cost of quantization (issue 28), kept with the export: for each GGUF of an export job, perplexity on
    the held-out answers and, for a quantization, its KL divergence from the export's f16 (llama.cpp's
    ``llama-perplexity --kl-divergence`` method; core.deploy.quant_cost). One row per export and quantization;
    a later measurement of the same export (a ``quant_cost`` job) replaces its rows."""
    con.execute(
        """
        CREATE TABLE quant_costs (
            export_job_id   INTEGER NOT NULL,
            quantization    VARCHAR NOT NULL,           -- f16 | q8_0 | q4_k_m
            run_id          VARCHAR,
            measured_by_job INTEGER NOT NULL,           -- the export job itself, or a quant_cost job
            sequences       INTEGER NOT NULL,           -- held-out pairs measured
            tokens          INTEGER NOT NULL,           -- answer tokens scored
            ppl             DOUBLE NOT NULL,
            ppl_unc         DOUBLE,
            ppl_ratio       DOUBLE,                     -- PPL(q) / PPL(f16)
            kl_mean         DOUBLE,                     -- nats; NULL for f16 (the reference)
            kl_unc          DOUBLE,
            kl_median       DOUBLE,
            kl_p99          DOUBLE,
            kl_max          DOUBLE,
            same_top        DOUBLE,                     -- share of answer tokens with f16's most likely token
            dp_rms          DOUBLE,                     -- RMS of p_q(token) - p_f16(token)
            file_bytes      BIGINT,
            method          VARCHAR,
            report          VARCHAR,                    -- quant_cost.json, per sequence
            created_at      TIMESTAMPTZ NOT NULL,
            project         VARCHAR,
            PRIMARY KEY (export_job_id, quantization)
        );
        CREATE INDEX quant_costs_run ON quant_costs (run_id);
        """
    )


def _m017_ray_jobs(con: duckdb.DuckDBPyConnection) -> None:
    """A job run on a Ray cluster (issue 25, core.jobs.ray_cluster): its Ray submission id, recorded when the
    supervisor claims the job and before it submits it (a supervisor that dies in between finds the id and asks
    Ray), the cluster's address it went to, and the id of the Ray node whose process ran it, once Ray says. NULL
    for a job run by a local worker."""
    con.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ray_job VARCHAR")
    con.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ray_address VARCHAR")
    con.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ray_node VARCHAR")


MIGRATIONS = [_m001_initial, _m002_reviews, _m004_evaluation_details, _m005_release_lifecycle,
              _m006_training_metrics, _m007_team_access, _m008_preference_votes, _m009_word_scores,
              _m010_saved_conversations, _m011_judge, _m012_sign_in_guards, _m013_artifact_evaluations,
              _m014_sweeps, _m015_retention,
              _m016_quant_cost, _m017_ray_jobs]


def _migration_number(fn) -> int:
    """``_m004_name`` is migration 4: numbers come from the names, so branches can leave gaps."""
    return int(fn.__name__.split("_")[1].lstrip("m"))


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)"
    )
    done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = 0
    for number, fn in sorted((_migration_number(fn), fn) for fn in MIGRATIONS):
        if number in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)", [number, fn.__name__, now()]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied += 1
    return applied


# ── the store's clock ────────────────────────────────────────────────────────
# Every timestamp the store writes is UTC, from here. It sits in this module, at the bottom of the store,
# because the migrations stamp with it too (the store imports this module, never the other way round).


def now() -> datetime:
    return datetime.now(timezone.utc)
