-- The seller's particulars an enterprise registered: its invoices carry them as the seller's.
ALTER TABLE enterprises ADD COLUMN address TEXT;
ALTER TABLE enterprises ADD COLUMN phone TEXT;
ALTER TABLE enterprises ADD COLUMN bank_name TEXT;
ALTER TABLE enterprises ADD COLUMN bank_account TEXT;
