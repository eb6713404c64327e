"""The team server's domain: users and their tokens, projects and who may do what in
them (grants), and the audit trail of every change. Faces: ``tether server …`` commands
and the server app (``tether.server``)."""
