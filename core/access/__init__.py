"""Team access: who acts (``principal``), accounts and sign-in sessions (``accounts``), one project
per client (``projects``), and client demo links (``demo_links``). Every state-changing function in
``core`` takes the acting principal and checks its role here."""
