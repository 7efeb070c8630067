// Drives `atp serve` with the official OpenAI client (tests/server_client_test.cpp runs it):
// models (list and retrieve), completions and chat, whole and streamed, n choices, the `kv` extension
// field, and the errors the client maps to its classes: 400, 401 (wrong key), 404 (unknown model).
// Usage: node client.mjs http://127.0.0.1:PORT/v1 API_KEY ; prints "ok" and exits 0 when every check holds.
import OpenAI from 'openai';

const options = { baseURL: process.argv[2], maxRetries: 0, timeout: 60000 };
const client = new OpenAI({ ...options, apiKey: process.argv[3] });
const model = 'ref-5m';
const check = (cond, what) => {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
};

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, `models.list: ${JSON.stringify(models.data)}`);
const card = await client.models.retrieve(model);
check(card.id === model && card.object === 'model', `models.retrieve: ${JSON.stringify(card)}`);

// The error classes the client raises for what the server answers.
const expectError = async (what, call, cls, status, code) => {
  try {
    await call();
    check(false, `${what} succeeded`);
  } catch (e) {
    check(e instanceof cls, `${what}: expected ${cls.name}, got ${e}`);
    check(e.status === status && e.code === code, `${what}: ${e.status} ${JSON.stringify(e.error)}`);
  }
};
const wrongKey = new OpenAI({ ...options, apiKey: 'wrong-key' });
await expectError('a wrong API key', () => wrongKey.models.list(), OpenAI.AuthenticationError, 401, 'invalid_api_key');
await expectError('a wrong API key', () => wrongKey.completions.create({ model, prompt: 'x', max_tokens: 1 }),
  OpenAI.AuthenticationError, 401, 'invalid_api_key');
await expectError('an unknown model', () => client.completions.create({ model: 'gpt-x', prompt: 'x', max_tokens: 1 }),
  OpenAI.NotFoundError, 404, 'model_not_found');
await expectError('retrieving an unknown model', () => client.models.retrieve('gpt-x'), OpenAI.NotFoundError, 404, 'model_not_found');

const three = await client.chat.completions.create({
  model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 1, seed: 3, n: 3, logprobs: true,
});
check(three.choices.length === 3 && three.choices.every((c, i) => c.index === i && c.message.role === 'assistant'),
  `n=3: ${JSON.stringify(three.choices)}`);
const tokens = three.choices.reduce((sum, c) => sum + c.logprobs.content.length, 0);
check(three.usage.completion_tokens === tokens, `n=3 usage ${JSON.stringify(three.usage)} for ${tokens} tokens`);

const c = await client.completions.create({ model, prompt: 'In the beginning', max_tokens: 8, temperature: 0 });
check(c.object === 'text_completion' && c.choices[0].text.length > 0, `completion: ${JSON.stringify(c)}`);
check(c.usage.completion_tokens === 8 && c.choices[0].finish_reason === 'length', `completion usage: ${JSON.stringify(c.usage)}`);

let streamed = '';
const cs = await client.completions.create({ model, prompt: 'In the beginning', max_tokens: 8, temperature: 0, stream: true });
for await (const chunk of cs) streamed += chunk.choices[0]?.text ?? '';
check(streamed === c.choices[0].text, `streamed completion '${streamed}' != '${c.choices[0].text}'`);

const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
check(chat.object === 'chat.completion' && chat.choices[0].message.role === 'assistant', `chat: ${JSON.stringify(chat)}`);

let text = '';
let usage = null;
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
  if (chunk.usage) usage = chunk.usage;
}
check(text === chat.choices[0].message.content, `streamed chat '${text}' != '${chat.choices[0].message.content}'`);
check(usage && usage.completion_tokens === chat.usage.completion_tokens, `stream usage: ${JSON.stringify(usage)}`);

// The server's extension field passes through the client untouched.
const half = await client.completions.create({ model, prompt: 'In the beginning', max_tokens: 8, temperature: 0, kv: 'dense:dtype=bf16' });
check(half.choices[0].text.length > 0, `kv extension: ${JSON.stringify(half)}`);

try {
  await client.completions.create({ model, prompt: 'x', temperature: 5 });
  check(false, 'temperature 5 was accepted');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${e}`);
  check(e.status === 400 && e.param === 'temperature' && e.type === 'invalid_request_error', `error fields: ${JSON.stringify(e.error)}`);
}
console.log('ok');
