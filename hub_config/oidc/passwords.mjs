// Password hashes written by enclave.hub.accounts (Python's hashlib.scrypt):
// "scrypt$ln=<log2 N>$r=<r>$p=<p>$<salt, base64>$<hash, base64>".
import crypto from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt);

// Verifying an unknown user name against this hash takes as long as a real
// check, so the response time does not tell which user names exist.
const DUMMY_HASH = 'scrypt$ln=15$r=8$p=1$'
  + 'AAAAAAAAAAAAAAAAAAAAAA==$'
  + 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';

function parseHash(encoded) {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') {
    throw new TypeError('password hash is not in the scrypt$ln=..$r=..$p=..$salt$hash format');
  }
  const field = (text, name) => {
    const [key, value] = text.split('=');
    if (key !== name || !/^\d+$/.test(value)) {
      throw new TypeError(`password hash has an invalid ${name} field`);
    }
    return Number(value);
  };
  return {
    logN: field(parts[1], 'ln'),
    r: field(parts[2], 'r'),
    p: field(parts[3], 'p'),
    salt: Buffer.from(parts[4], 'base64'),
    hash: Buffer.from(parts[5], 'base64'),
  };
}

/** Return true when `password` matches the scrypt hash `encoded`. */
export async function verifyPassword(password, encoded) {
  const known = typeof encoded === 'string';
  const { logN, r, p, salt, hash } = parseHash(known ? encoded : DUMMY_HASH);
  const N = 2 ** logN;
  const derived = await scrypt(String(password), salt, hash.length, {
    N, r, p, maxmem: 256 * N * r,
  });
  return known && crypto.timingSafeEqual(derived, hash);
}
