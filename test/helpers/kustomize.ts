/**
 * Renders a Kustomize directory without a cluster or a kustomize binary, supporting exactly what
 * deploy/kubernetes uses: `resources` (files, or directories with their own kustomization.yaml)
 * `patches` with `path` (strategic-merge patches matched by apiVersion, kind and name) and
 * `images` (`name` → `newName` / `newTag`, in the containers of Deployments).
 * Merge rules: maps merge key by key, `null` removes a key, lists of objects with a `name`
 * merge item by item by name (containers, volumes, ports, env), any other list is replaced.
 * Anything else in a kustomization.yaml is an error, so the renderer never silently differs.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string } & Record<string, unknown> } & Record<string, unknown>;

const SUPPORTED = new Set(['apiVersion', 'kind', 'resources', 'patches', 'images']);

export function renderKustomization(dir: string): K8sObject[] {
  const k = readYaml(join(dir, 'kustomization.yaml'))[0] as Record<string, any>;
  for (const key of Object.keys(k)) if (!SUPPORTED.has(key)) throw new Error(`${dir}/kustomization.yaml: "${key}" is not supported by the test renderer`);
  const objects: K8sObject[] = [];
  for (const resource of k.resources ?? []) {
    const path = join(dir, resource);
    objects.push(...(statSync(path).isDirectory() ? renderKustomization(path) : (readYaml(path) as K8sObject[])));
  }
  for (const patch of k.patches ?? []) {
    if (Object.keys(patch).join() !== 'path') throw new Error(`${dir}: only patches with a path are supported`);
    for (const p of readYaml(join(dir, patch.path)) as K8sObject[]) {
      const target = objects.findIndex((o) => o.apiVersion === p.apiVersion && o.kind === p.kind && o.metadata.name === p.metadata.name);
      if (target < 0) throw new Error(`${dir}/${patch.path}: no ${p.kind} ${p.metadata.name} to patch`);
      objects[target] = merge(objects[target], p) as K8sObject;
    }
  }
  for (const image of k.images ?? []) {
    for (const o of objects) {
      for (const c of (o as any).spec?.template?.spec?.containers ?? []) {
        const at = c.image.lastIndexOf(':') > c.image.lastIndexOf('/') ? c.image.lastIndexOf(':') : c.image.length;
        const [name, tag] = [c.image.slice(0, at), c.image.slice(at + 1)];
        if (name === image.name) c.image = `${image.newName ?? name}:${image.newTag ?? tag}`;
      }
    }
  }
  return objects;
}

function readYaml(path: string): unknown[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors[0].message}`);
      return doc.toJS();
    })
    .filter((doc) => doc != null);
}

function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function merge(base: unknown, patch: unknown): unknown {
  if (isMap(base) && isMap(patch)) {
    const out: Record<string, unknown> = { ...base };
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) delete out[key];
      else out[key] = key in base ? merge(base[key], value) : value;
    }
    return out;
  }
  const named = (list: unknown) => Array.isArray(list) && list.every((item) => isMap(item) && typeof item.name === 'string');
  if (named(base) && named(patch)) {
    const out = [...(base as Array<Record<string, unknown>>)];
    for (const item of patch as Array<Record<string, unknown>>) {
      const at = out.findIndex((o) => o.name === item.name);
      if (at < 0) out.push(item);
      else out[at] = merge(out[at], item) as Record<string, unknown>;
    }
    return out;
  }
  return patch;
}
