import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { KERNEL_DECLARATION } from './kernel-prologue.ts';

// A launcher whose parameter letters disagree with the kernel's C signature passes garbage to the
// GPU without any error, so every launch site is checked against the .cu source here, without a GPU.

const KERNEL_DIR = new URL('./kernels/', import.meta.url);

function kernelSignatures(): Map<string, string> {
  const out = new Map<string, string>();
  for (const file of readdirSync(KERNEL_DIR).filter((f) => f.endsWith('.cu'))) {
    const source = readFileSync(new URL(file, KERNEL_DIR), 'utf8');
    for (const match of source.matchAll(new RegExp(`${KERNEL_DECLARATION.source}([^)]*)\\)`, 'g'))) {
      const letters = match[2].split(',').map((param) => {
        const p = param.trim();
        if (/^const __grid_constant__ TensorMap /.test(p)) return 't';
        if (p.includes('*')) return 'p';
        if (/^(const )?long long /.test(p)) return 'l';
        if (/^(const )?int /.test(p)) return 'i';
        if (/^(const )?float /.test(p)) return 'f';
        throw new Error(`${file}: cannot classify parameter '${p}'`);
      });
      out.set(`${file}:${match[1]}`, letters.join(''));
    }
  }
  return out;
}

function launchSites(): { file: string; kernel: string; signature: string; where: string }[] {
  const sites = [];
  for (const file of readdirSync(KERNEL_DIR).filter((f) => f.endsWith('.ts'))) {
    const source = readFileSync(new URL(file, KERNEL_DIR), 'utf8');
    for (const match of source.matchAll(/device\.kernel\(\s*'([\w.-]+)',\s*(?:'(\w+)'|([^,]+)),\s*'(\w+)'/g)) {
      const names = match[2] ? [match[2]] : [...match[3].matchAll(/'(\w+_kernel)'/g)].map((m) => m[1]);
      for (const kernel of names) sites.push({ file: match[1], kernel, signature: match[4], where: file });
    }
  }
  return sites;
}

test('every launch site passes the parameters its kernel declares', () => {
  const signatures = kernelSignatures();
  const sites = launchSites();
  assert.ok(sites.length >= 12, `found only ${sites.length} launch sites`);
  for (const site of sites) {
    const declared = signatures.get(`${site.file}:${site.kernel}`);
    assert.ok(declared !== undefined, `${site.where}: no kernel ${site.kernel} in ${site.file}`);
    assert.equal(site.signature, declared, `${site.where}: ${site.kernel}`);
  }
});
