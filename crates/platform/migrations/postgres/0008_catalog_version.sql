-- The version of the tax code catalog each invoice's order was validated against (platform's
-- hosted devices; NULL for invoices from before, and for those an agent reports).
ALTER TABLE invoices ADD COLUMN catalog_version TEXT;
