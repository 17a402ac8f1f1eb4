-- Invoices in issue order, for clouds reconciling (`invoices.list`: keyset pages).
CREATE INDEX invoices_issued ON invoices (issued_at, number);
