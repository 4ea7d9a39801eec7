# Resume Gateway example: a Workato connector whose action starts a third-party job, suspends the
# Workato job, and continues when resume-gateway calls POST /api/job/resume with the result.
#
# The Wait-for-resume contract this code relies on (Workato docs, "Wait for resume actions" guide:
# developing-connectors/sdk/guides/building-actions/wait-for-resume-actions, and the SDK actions
# reference, sections before_suspend / before_resume / before_timeout_resume):
#
#   execute(connection, input, eis, eos, continue)
#       `continue` is nil on the first run. Calling suspend(continue: {...}, expires_at: time)
#       puts the job to sleep (60 days at most). Requests made before suspend are lazy and must be
#       forced with `.presence`. When the job wakes up, execute runs again with the `continue`
#       hash as before_resume or before_timeout_resume left it; its return value is the output.
#   before_suspend(resume_token, expires_at, continue)
#       Runs after suspend is called; its requests go through the connection's `apply`. This is
#       where the token is handed to the external system: here, POST /v1/waits on the gateway.
#   before_resume(data, input, continue)
#       Runs when the resume request arrives; `data` is the request's `data`. It edits `continue`
#       (its return value is ignored). Here it uses `payload`, or fetches `payload_ref.url` and
#       checks size and SHA-256, and leaves the result in `continue` for execute to return.
#   before_timeout_resume(input, continue)
#       Runs instead when expires_at passes first.
#
# Seed 001 (POST /api/job/resume) adds: `data` is at most 50 MB; larger results are sent as a
# reference fetched in a secondary request (the seed names execute; the gateway's issue asks for
# before_resume, which can make requests too: this connector fetches there). resume-gateway does
# exactly that: `data.payload` is null and `data.payload_ref` = {url, size, sha256, content_type,
# expires_at} points at a signed, expiring GET URL: the gateway's /v1/blobs/{id}?expires=&sig=,
# or an S3 presigned URL when the gateway is set to presign.
{
  title: 'Resume Gateway example',

  connection: {
    fields: [
      {
        name: 'base_url',
        label: 'Gateway base URL',
        control_type: 'url',
        optional: false,
        hint: 'Where resume-gateway serves its API, e.g. ' \
              '<b>https://resume-gateway.example.com</b>. It must be reachable from Workato.'
      },
      {
        name: 'api_key',
        label: 'API key',
        control_type: 'password',
        optional: false,
        hint: 'One of the tenant\'s <b>api_keys</b> in the gateway configuration. ' \
              'The key names the tenant, so it decides which Workato workspace the gateway resumes.'
      },
      {
        name: 'managed_user_id',
        label: 'Managed user ID',
        optional: true,
        hint: 'Embedded partners only: the customer workspace whose jobs wait. Sent with the job ' \
              'reference so the gateway can look the job up through the managed_users Jobs API.'
      }
    ],

    authorization: {
      type: 'custom_auth',

      # The key goes to the gateway's API only: never to the third party's start URL, and not to
      # the claim-check downloads, whose signed URLs are their own credential. `current_url` is
      # the URL of the request being authorized (see `ignore_redirection` in the SDK's Ruby
      # methods reference, which strips apply's auth the same way).
      apply: lambda do |connection|
        gateway = connection['base_url'].to_s.chomp('/')
        api = current_url.start_with?("#{gateway}/v1/")
        blob = current_url.start_with?("#{gateway}/v1/blobs/")
        headers(Authorization: "Bearer #{connection['api_key']}") if api && !blob
      end
    },

    base_uri: lambda do |connection|
      "#{connection['base_url'].to_s.chomp('/')}/"
    end
  },

  # An unknown wait answers 404 when the key is accepted and 401 when it is not, so this checks
  # both that the gateway is reachable and that the key is valid.
  test: lambda do |_connection|
    get('/v1/waits/workato-connection-test')
      .after_error_response(404) { |*| { 'api_key' => 'accepted' } }
  end,

  actions: {
    run_job_and_wait: {
      title: 'Run job and wait for result',
      subtitle: 'Start a third-party job and resume when resume-gateway reports its result',
      description: "Run job and wait for <span class='provider'>result</span> " \
                   "via <span class='provider'>Resume Gateway</span>",
      help: 'Starts a job in another system (optional), registers this Workato job with ' \
            'resume-gateway under a correlation key, and suspends. When the third party reports ' \
            'completion for that key, the gateway resumes this job with the result. Results over ' \
            'Workato\'s 50 MB limit are downloaded from the gateway and checked against their ' \
            'size and SHA-256.',

      config_fields: [
        {
          name: 'payload_schema',
          label: 'Result payload schema',
          optional: true,
          sticky: true,
          schema_neutral: true,
          control_type: 'schema-designer',
          sample_data_type: 'json_input',
          hint: 'Shape of the third party\'s result, to get datapills for its fields. ' \
                'Without it, use the Payload (JSON) datapill.'
        }
      ],

      input_fields: lambda do |_object_definitions|
        [
          {
            name: 'correlation_key',
            label: 'Correlation key',
            optional: false,
            hint: 'The key the third party reports completion with (for a webhook source, ' \
                  'the key its mapping extracts, after key_template). Unique per waiting job.'
          },
          {
            name: 'start_url',
            label: 'Start job URL',
            control_type: 'url',
            optional: true,
            hint: 'Optional. The action POSTs the body below here before it suspends. Leave ' \
                  'empty if the job is started elsewhere: an early result waits in the gateway.'
          },
          {
            name: 'start_body',
            label: 'Start job body (JSON)',
            control_type: 'text-area',
            optional: true,
            hint: 'JSON sent to the start URL. Include the correlation key so that the third ' \
                  'party can report with it. Default: {"correlation_key": "&lt;key&gt;"}.'
          },
          {
            name: 'start_authorization',
            label: 'Start job Authorization header',
            control_type: 'password',
            optional: true,
            hint: 'Sent as is to the start URL only, e.g. <b>Bearer abc123</b>.'
          },
          {
            name: 'timeout_minutes',
            label: 'Wait at most (minutes)',
            type: 'integer',
            control_type: 'integer',
            optional: true,
            hint: 'Default 1440 (one day); at most 86400 (60 days, Workato\'s longest ' \
                  'suspension). The gateway expires the wait at the same moment.'
          },
          {
            name: 'metadata',
            label: 'Metadata',
            type: 'array',
            of: 'object',
            control_type: 'key_value',
            optional: true,
            item_label: 'Entry',
            empty_list_title: 'Anything to get back with the result?',
            empty_list_text: 'Stored with the wait and returned unchanged in the result.',
            properties: [{ name: 'key' }, { name: 'value' }]
          },
          {
            name: 'send_job_reference',
            label: 'Send job reference',
            type: 'boolean',
            control_type: 'checkbox',
            optional: true,
            hint: 'Embedded partner workspaces only (execution_context is available there only): ' \
                  'send this recipe and job ID so the gateway can confirm an ambiguous resume ' \
                  'through the Jobs API.'
          }
        ]
      end,

      execute: lambda do |connection, input, _eis, _eos, continue|
        if continue.blank?
          call(:start_third_party_job, input)
          suspend(
            continue: {
              'state' => 'suspended',
              'key' => input['correlation_key'],
              'metadata' => call(:metadata_hash, input['metadata']),
              'job' => call(:job_reference, connection, input)
            }.compact,
            expires_at: call(:timeout_minutes, input).minutes.from_now
          )
        elsif continue['state'] == 'resumed'
          continue['result']
        elsif continue['state'] == 'timed_out'
          error("No result for correlation key #{continue['key']} before the wait expired. " \
                'The third party never reported completion, or reported it with another key.')
        else
          error("Unexpected state #{continue['state'].inspect} of a resumed job.")
        end
      end,

      before_suspend: lambda do |resume_token, expires_at, continue|
        call(:register_wait, resume_token, expires_at, continue)
      end,

      before_resume: lambda do |data, _input, continue|
        if continue['state'] == 'suspended'
          # The payload inline, or downloaded from payload_ref.url and checked (size, SHA-256);
          # a failed job or a bad download raises here, failing the step with the reason.
          continue['result'] = call(:result_from, data)
          continue['state'] = 'resumed'
        end
      end,

      before_timeout_resume: lambda do |_input, continue|
        continue['state'] = 'timed_out' if continue['state'] == 'suspended'
      end,

      output_fields: lambda do |object_definitions, _connection, _config_fields|
        object_definitions['result']
      end,

      sample_output: lambda do |_connection, _input|
        {
          'status' => 'succeeded',
          'key' => 'order-42',
          'event_id' => 'evt-1',
          'source' => 'api',
          'received_at' => '2026-11-22T10:00:00.000Z',
          'delivered_via' => 'inline',
          'payload_json' => '{"total": 42.50}'
        }
      end
    }
  },

  object_definitions: {
    result: {
      fields: lambda do |_connection, config_fields|
        payload_fields = parse_json(config_fields['payload_schema'].presence || '[]')
        [
          { name: 'status', hint: 'succeeded (failed raises an error)' },
          { name: 'key', label: 'Correlation key' },
          { name: 'event_id', label: 'Event ID', hint: 'The completion event\'s id at its source' },
          { name: 'source', hint: 'api, kafka, a webhook source\'s name, or poll:<connection>' },
          { name: 'received_at', type: 'date_time', hint: 'When the gateway accepted the event' },
          { name: 'metadata', type: 'object', properties: [] },
          { name: 'delivered_via', hint: 'inline: in the resume request; claim_check: downloaded' },
          { name: 'payload', type: 'object', properties: payload_fields,
            hint: 'The result when it is a JSON object' },
          { name: 'payload_json', label: 'Payload (JSON)',
            hint: 'The result as JSON text, whatever its shape' },
          { name: 'content', hint: 'A downloaded result that is not JSON, as received' },
          { name: 'content_type', hint: 'Claim checks only' },
          { name: 'size', type: 'integer', hint: 'Claim checks only: bytes, verified' },
          { name: 'sha256', label: 'SHA-256', hint: 'Claim checks only: hex, verified' }
        ]
      end
    }
  },

  methods: {
    # Forced with `.presence`: requests in execute are lazy and would otherwise never leave
    # before the job suspends (SDK guide, "Limitations").
    start_third_party_job: lambda do |input|
      next if input['start_url'].blank?

      body = if input['start_body'].present?
               parse_json(input['start_body'])
             else
               { correlation_key: input['correlation_key'] }
             end
      request = post(input['start_url'], body)
      authorization = input['start_authorization'].presence
      request = request.headers(Authorization: authorization) if authorization
      request.after_error_response(/.*/) do |code, response_body, _headers, message|
        error("Starting the job at #{input['start_url']} failed (HTTP #{code || message}): " \
              "#{response_body.to_s[0, 500]}")
      end.presence
    end,

    timeout_minutes: lambda do |input|
      minutes = (input['timeout_minutes'].presence || 1440).to_i
      minutes.clamp(1, 60 * 24 * 60)
    end,

    metadata_hash: lambda do |pairs|
      Array.wrap(pairs).each_with_object({}) do |pair, metadata|
        metadata[pair['key']] = pair['value'] if pair['key'].present?
      end.presence
    end,

    # execution_context is documented for Embedded partner workspaces only, hence the opt-in.
    job_reference: lambda do |connection, input|
      next unless input['send_job_reference'].to_s == 'true'

      context = execution_context
      next if context[:recipe_id].blank? || context[:job_id].blank?

      {
        'recipe_id' => context[:recipe_id],
        'job_id' => context[:job_id],
        'managed_user_id' => connection['managed_user_id'].presence
      }.compact
    end,

    # POST /v1/waits (schemas/wait-registration.schema.json). The same token registered again
    # answers 200 `repeat`, so a retried before_suspend is harmless. Workato hands expires_at in
    # Pacific time; the gateway wants an offset, so it is sent in UTC.
    register_wait: lambda do |resume_token, expires_at, continue|
      body = {
        key: continue['key'],
        resume_token: resume_token,
        expires_at: expires_at&.to_time&.utc&.iso8601,
        job: continue['job'],
        metadata: continue['metadata']
      }.compact
      post('/v1/waits', body).after_error_response(/.*/) do |code, response_body, _headers, message|
        error(call(:registration_error, continue['key'], code || message, response_body))
      end.presence
    end,

    # The gateway answers RFC 9457 problems; a 409 names its `reason`.
    registration_error: lambda do |key, code, problem_body|
      problem = (parse_json(problem_body.to_s) rescue nil)
      problem = {} unless problem.is_a?(Hash)
      advice = case code.to_i
               when 401 then 'Check the connection\'s API key.'
               when 409
                 if problem['reason'] == 'token_registered_under_other_key'
                   'This job already waits under another key.'
                 else
                   'Another job already waits for this key: keys must be unique among open waits.'
                 end
               when 422 then 'The gateway rejected a field of the registration.'
               else 'Is the gateway URL right and the gateway up?'
               end
      detail = problem['detail'].presence || problem_body.to_s[0, 300]
      "resume-gateway did not register the wait for key #{key} (HTTP #{code}): #{detail}. #{advice}"
    end,

    # `data` as resume-gateway sends it (schemas/resume-data.schema.json, DESIGN 5.3):
    # {status, key, event_id, source, received_at, metadata, payload} and, for results over the
    # limit, payload: null plus payload_ref.
    result_from: lambda do |data|
      error('The job was resumed without data.') if data.nil?
      data = call(:unwrapped_envelope, data) unless data.is_a?(Hash) && data.key?('event_id')

      call(:raise_failure, data) if data['status'] == 'failed'

      result = data.slice('status', 'key', 'event_id', 'source', 'received_at', 'metadata')
      ref = data['payload_ref']
      if data['payload'].nil? && ref.present?
        result.merge(call(:claim_check, ref))
      else
        result.merge(call(:inline_payload, data['payload']))
      end
    end,

    # A tenant with raw_mode = true sends the event's data unwrapped, or {"payload_ref": {...}}
    # alone when it is a claim check. Raw mode carries no status: it is taken as a success.
    unwrapped_envelope: lambda do |data|
      if data.is_a?(Hash) && data.keys == ['payload_ref']
        { 'status' => 'succeeded', 'payload' => nil, 'payload_ref' => data['payload_ref'] }
      else
        { 'status' => 'succeeded', 'payload' => data }
      end
    end,

    # The payload of a failure is usually the third party's error report: show its start. The
    # claim-check URL is left out on purpose: it is a credential until it expires.
    raise_failure: lambda do |data|
      detail = if data['payload'].nil? && data['payload_ref'].present?
                 "its report (#{data['payload_ref']['size']} bytes) came as a claim check"
               else
                 data['payload'].to_json.to_s[0, 1000]
               end
      error("The third-party job for key #{data['key']} failed (event #{data['event_id']} from " \
            "#{data['source']}, received #{data['received_at']}): #{detail}")
    end,

    inline_payload: lambda do |payload|
      {
        'delivered_via' => 'inline',
        'payload' => (payload if payload.is_a?(Hash)),
        'payload_json' => payload.to_json
      }.compact
    end,

    # The URL carries its own signature (and expiry), so it gets no Authorization header: see
    # `apply`. Size and SHA-256 are checked before anything is parsed. `encode_sha256` returns
    # the binary digest and `encode_hex` turns it into hex (SDK Ruby methods reference).
    claim_check: lambda do |ref|
      download = get(ref['url']).response_format_raw
      body = download.after_error_response(/.*/) do |code, _body, _headers, message|
        error("Downloading the result (#{ref['size']} bytes) from resume-gateway failed " \
              "(HTTP #{code || message}). The link expires at #{ref['expires_at']}; is the " \
              'gateway\'s [blobs] public_base_url reachable from Workato?')
      end
      body = body.to_s

      if body.bytesize != ref['size'].to_i
        error("The downloaded result has #{body.bytesize} bytes; " \
              "the gateway announced #{ref['size']}.")
      end
      digest = body.encode_sha256.encode_hex
      unless digest.casecmp?(ref['sha256'].to_s)
        error("The downloaded result's SHA-256 is #{digest}; " \
              "the gateway announced #{ref['sha256']}.")
      end

      call(:claim_check_content, body, ref).merge(
        'delivered_via' => 'claim_check',
        'content_type' => ref['content_type'],
        'size' => body.bytesize,
        'sha256' => digest
      )
    end,

    # JSON only when the gateway says so (application/json or a +json type); anything else is
    # returned as received, for a file or storage step to take.
    claim_check_content: lambda do |body, ref|
      media_type = ref['content_type'].to_s.split(';').first.to_s.strip.downcase
      if media_type == 'application/json' || media_type.end_with?('+json')
        text = body.dup.force_encoding('UTF-8')
        payload = parse_json(text)
        { 'payload' => (payload if payload.is_a?(Hash)), 'payload_json' => text }.compact
      else
        { 'content' => body }
      end
    end
  }
}
