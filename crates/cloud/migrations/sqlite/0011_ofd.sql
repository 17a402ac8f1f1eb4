-- An invoice's OFD signature (base64 DER SM2), as platform's issuing device made it on the
-- first download; later downloads attach it to the same deterministic render.
ALTER TABLE invoices ADD COLUMN ofd_signature TEXT;
