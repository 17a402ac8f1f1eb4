-- ERP request nonces join the shared replay guard (sender `erp:<key id>`), whose writes are
-- group-committed: concurrent ERP requests share one durable commit for their nonces.
INSERT INTO seen_messages (sender, message_id, expires_at)
SELECT 'erp:' || key_id, nonce, expires_at FROM api_nonces WHERE true
ON CONFLICT (sender, message_id) DO NOTHING;
DROP TABLE api_nonces;
