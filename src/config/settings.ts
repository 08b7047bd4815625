/**
 * The one mechanism behind narwhal's configurations (the server's, config.ts; the pusher's,
 * pusher/config.ts). A TypeBox schema declares every setting once: its file key (its place in
 * the schema), its type and checks, its default (written as a file would give it), and in its
 * options the `NARWHAL_*` variable and the flag that may set it. The TypeScript type of the
 * loaded configuration is the schema's decoded type.
 *
 * loadSettings() lays the sources on one document, each later one winning: defaults, the JSON
 * file, the environment, the flags. It then checks and decodes that document once. An error names
 * the setting as its source spells it (`limits.narBytes`, `NARWHAL_PRIORITY`, `--workers`), the
 * source, and the reason.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { Kind, TransformKind, Type, type StaticDecode, type TObject, type TSchema } from '@sinclair/typebox'
import { TransformDecodeError, Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value'
import { ConfigError, isRecord, splitWords } from './values.js'

/** What a setting's schema says besides JSON Schema (TypeBox keeps extra options on the schema). */
export interface SettingOptions {
  /** The environment variable that sets it. */
  env?: string
  /** The flag (without `--`) that sets it, in the commands that take it. */
  flag?: string
  /**
   * How a variable's text becomes the value a file would give: by default a number for integer
   * settings, true/false (or 1/0) for booleans, white-space separated words for lists, else the
   * text itself.
   */
  text?: (text: string) => unknown
  /** A file path: a relative one in a config file is relative to that file. */
  path?: boolean
  /** Said when a value is not of the schema's type: "expected <this>, got …". */
  expected?: string
  /** Added to "expected at most N" (e.g. "seconds"). */
  unit?: string
  /** A section given as a string in a file stands for `{ <shorthand>: string }`. */
  shorthand?: string
}

type Setting = TSchema & SettingOptions

/** A setting's options: its description (said where its schema is shown) and SettingOptions. */
export function o (description: string, options: SettingOptions & { default?: unknown, minimum?: number, maximum?: number, minLength?: number, minItems?: number } = {}): SettingOptions & { description: string } {
  return { description, ...options }
}

/** A setting whose value, as given, is decoded into another type (a size into bytes, "auto" into a count). */
export function decoded<S extends TSchema, T> (schema: S, decode: (value: StaticDecode<S>) => T) {
  return Type.Transform(schema).Decode(decode).Encode(() => { throw new Error('configuration is never encoded') })
}

/**
 * Thrown by a setting's decoder: the reason only; loadSettings adds the setting's name, the value
 * and the source. `shown` replaces the value in the message (a URL with its password hidden).
 */
export class Invalid extends Error {
  constructor (reason: string, readonly shown?: string) {
    super(reason)
  }
}

export function invalid (reason: string, shown?: string): never {
  throw new Invalid(reason, shown)
}

/** Flag values as node:util parseArgs gives them, by flag name; undefined means not given. */
export type Flags = Record<string, string | string[] | undefined>

export interface Sources {
  /** The JSON config file, if one is named. */
  file?: string | undefined
  env: NodeJS.ProcessEnv
  flags?: Flags
}

type Origin = { kind: 'file', file: string } | { kind: 'env', name: string, text: string } | { kind: 'flag', name: string, text: string | string[] }

/** A section is an object of settings; every other schema is one setting. */
function isSection (schema: TSchema): schema is TObject {
  return schema[Kind] === 'Object' && !(TransformKind in schema)
}

/** Every setting of a schema, with its path of keys. */
export function settingsOf (schema: TObject, at: string[] = []): Array<{ keys: string[], setting: Setting }> {
  return Object.entries(schema.properties).flatMap(([key, child]) =>
    isSection(child) ? settingsOf(child, [...at, key]) : [{ keys: [...at, key], setting: child as Setting }])
}

/** Reads and parses a JSON config file; the errors name the file and say what is wrong. */
export function readJsonConfigFile (file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`config file ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`config file ${file}: not valid JSON (${(err as Error).message})`)
  }
}

/** The file's values, as given, with file paths made relative to the file's folder. */
function fromFile (schema: TSchema, value: unknown, dir: string): unknown {
  const options = schema as Setting
  if (isSection(schema)) {
    const raw = typeof value === 'string' && options.shorthand !== undefined ? { [options.shorthand]: value } : value
    if (!isRecord(raw)) return raw
    return Object.fromEntries(Object.entries(raw).map(([key, v]) => {
      const child = schema.properties[key]
      return [key, child === undefined ? v : fromFile(child, v, dir)]
    }))
  }
  if (options.path !== true) return value
  const resolve = (v: unknown): unknown => typeof v === 'string' && v !== '' ? path.resolve(dir, v) : v
  return Array.isArray(value) ? value.map(resolve) : resolve(value)
}

function fromText (setting: Setting, text: string): unknown {
  if (setting.text !== undefined) return setting.text(text)
  switch (setting[Kind]) {
    case 'Integer':
    case 'Number': {
      const n = Number(text)
      return Number.isFinite(n) ? n : text
    }
    case 'Boolean':
      return text === 'true' || text === '1' ? true : text === 'false' || text === '0' ? false : text
    case 'Array':
      return splitWords(text)
    default:
      return text
  }
}

/**
 * Fills in the defaults of settings not given (TypeBox's Value.Default would also merge a wrong
 * value into its default, turning `"trustedKeys": {}` into an empty list).
 */
function withDefaults (schema: TSchema, value: unknown): unknown {
  const given = value === undefined ? structuredClone(schema.default) : value
  if (schema[Kind] === 'Object' && isRecord(given)) {
    const filled: Record<string, unknown> = { ...given }
    for (const [key, child] of Object.entries((schema as TObject).properties)) filled[key] = withDefaults(child, filled[key])
    return filled
  }
  if (schema[Kind] === 'Array' && Array.isArray(given)) return given.map(item => withDefaults(schema.items as TSchema, item))
  return given
}

function setAt (doc: Record<string, unknown>, keys: string[], value: unknown): void {
  let node = doc
  for (const key of keys.slice(0, -1)) {
    const next = node[key]
    if (!isRecord(next)) node[key] = {}
    node = node[key] as Record<string, unknown>
  }
  node[keys[keys.length - 1] ?? ''] = value
}

/** `/limits/narBytes` → limits.narBytes, `/trustProxy/0` → trustProxy[0]. */
function fileKey (pointer: string): string {
  return pointer.split('/').slice(1).reduce((key, part) => /^\d+$/.test(part) ? `${key}[${part}]` : key === '' ? part : `${key}.${part}`, '')
}

function nameAndSource (origin: Origin | undefined, pointer: string): { name: string, source: string } {
  switch (origin?.kind) {
    case 'env':
      return { name: origin.name, source: 'environment' }
    case 'flag':
      return { name: `--${origin.name}`, source: 'command line' }
    case 'file':
      return { name: fileKey(pointer), source: `config file ${origin.file}` }
    default:
      return { name: fileKey(pointer), source: 'default' }
  }
}

/** The reason a value fails its schema, in narwhal's words. */
function schemaReason (error: ValueError): string {
  if (error.type === ValueErrorType.ObjectRequiredProperty || error.value === undefined) return `missing; ${typeReason(error)}`
  return typeReason(error)
}

function typeReason (error: ValueError): string {
  const schema = error.schema as Setting
  if (error.type === ValueErrorType.ObjectAdditionalProperties) {
    return `unknown setting (known: ${Object.keys((schema as TObject).properties).join(', ')})`
  }
  if (schema.expected !== undefined) return `expected ${schema.expected}`
  if (error.type === ValueErrorType.IntegerMaximum || error.type === ValueErrorType.NumberMaximum) {
    return `expected at most ${String(schema.maximum)}${schema.unit === undefined ? '' : ' ' + schema.unit}`
  }
  switch (schema[Kind]) {
    case 'Integer':
      return typeof schema.minimum === 'number' ? `expected an integer >= ${schema.minimum}` : 'expected an integer'
    case 'Boolean':
      return 'expected true or false'
    case 'String':
      return 'expected a non-empty string'
    case 'Object':
      return 'expected an object'
    case 'Array':
      return 'expected an array'
    default:
      return error.message
  }
}

/**
 * The configuration a schema describes, from its sources; frozen (the top level). Throws
 * ConfigError naming the setting, its source and the reason.
 */
export function loadSettings<S extends TObject> (schema: S, sources: Sources): StaticDecode<S> {
  const origins = new Map<string, Origin>()
  let doc: Record<string, unknown> = {}
  if (sources.file !== undefined) {
    const file = path.resolve(sources.file)
    const raw = readJsonConfigFile(file)
    if (!isRecord(raw)) throw new ConfigError(`${file}: expected a JSON object`)
    doc = fromFile(schema, raw, path.dirname(file)) as Record<string, unknown>
    origins.set('', { kind: 'file', file })
  }
  for (const { keys, setting } of settingsOf(schema)) {
    const pointer = '/' + keys.join('/')
    const text = setting.env === undefined ? undefined : sources.env[setting.env]?.trim()
    if (setting.env !== undefined && text !== undefined && text !== '') {
      setAt(doc, keys, fromText(setting, text))
      origins.set(pointer, { kind: 'env', name: setting.env, text })
    }
    const flag = setting.flag === undefined ? undefined : sources.flags?.[setting.flag]
    if (setting.flag !== undefined && flag !== undefined && !(Array.isArray(flag) && flag.length === 0)) {
      setAt(doc, keys, Array.isArray(flag) ? flag : fromText(setting, flag))
      origins.set(pointer, { kind: 'flag', name: setting.flag, text: flag })
    }
  }

  const fail = (pointer: string, value: unknown, reason: string | ConfigError, shown?: string): never => {
    let at = pointer
    while (!origins.has(at) && at !== '') at = at.slice(0, at.lastIndexOf('/'))
    const origin = origins.get(at)
    const { name, source } = nameAndSource(origin, pointer)
    if (reason instanceof ConfigError) throw new ConfigError(`${reason.message} (${source})`)
    // From a variable or a flag, the text as given; inside a list, the item at fault.
    const given = shown ?? (origin !== undefined && origin.kind !== 'file' && at === pointer && value !== undefined ? origin.text : value)
    throw new ConfigError(`${name}: ${reason}${given === undefined ? '' : `, got ${JSON.stringify(given)}`} (${source})`)
  }

  const filled = withDefaults(schema, doc)
  const error = Value.Errors(schema, filled).First()
  if (error !== undefined) {
    fail(error.path, error.type === ValueErrorType.ObjectAdditionalProperties ? undefined : error.value, schemaReason(error))
  }
  try {
    return Object.freeze(Value.Decode(schema, filled))
  } catch (err) {
    if (!(err instanceof TransformDecodeError)) throw err
    const inner = err.error
    if (inner instanceof Invalid) return fail(err.path, err.value, inner.message, inner.shown)
    if (inner instanceof ConfigError) return fail(err.path, err.value, inner)
    throw inner
  }
}
