#!/bin/bash
# SM2 signatures made by OpenSSL (pkeyutl, SM3, distinguishing ID 1234567812345678).
set -e
echo "# SM2 signatures made by $(openssl version | cut -d' ' -f1-2) (pkeyutl -sign -rawin -digest sm3 -pkeyopt distid:1234567812345678)"
echo "# public key (SEC1 uncompressed, hex) | message (hex) | signature (DER, hex)"
for i in $(seq 1 48); do
  openssl genpkey -algorithm SM2 -out k.pem 2>/dev/null
  len=$(( (i * 37) % 300 ))
  head -c $len /dev/urandom > m.bin
  openssl pkeyutl -sign -rawin -digest sm3 -pkeyopt distid:1234567812345678 -inkey k.pem -in m.bin -out s.der
  pub=$(openssl pkey -in k.pem -pubout -outform DER | tail -c 65 | xxd -p | tr -d '\n')
  msg=$(xxd -p m.bin | tr -d '\n')
  sig=$(xxd -p s.der | tr -d '\n')
  echo "$pub|$msg|$sig"
done
