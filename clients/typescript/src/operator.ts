// Small helpers for the operator, app-developer and provider keys: enough to set refreshd
// up from a script or a test.
import { ApiClient, seg } from './http.js';

export interface CreatedApp {
  appid: string;
  developer_key: string;
  /** Secret of the app's signed periodic fetches (64 hex chars), shown once. */
  signing_secret: string;
}

export interface CreatedDevice {
  device_id: string;
  device_key: string;
}

export interface CreatedProvider {
  provider: string;
  provider_key: string;
  signing_secret: string;
}

export interface RotatedSigningSecret {
  appid?: string;
  provider?: string;
  signing_secret: string;
  previous_valid_until: string | null;
}

/** Calls made with the operator key (`rfdo_`). */
export class RefreshdOperator extends ApiClient {
  createApp(appid: string, subject: 'individual' | 'organization' = 'individual'): Promise<CreatedApp> {
    return this.request('POST', '/v1/admin/apps', { appid, subject });
  }

  createDevice(deviceId: string, userId: string, zone: string): Promise<CreatedDevice> {
    return this.request('POST', '/v1/admin/devices', { device_id: deviceId, user_id: userId, zone });
  }

  createProvider(provider: string, refreshUrl: string, options: { systemApp?: boolean; apiVersion?: number } = {}): Promise<CreatedProvider> {
    return this.request('POST', '/v1/admin/providers', {
      provider,
      refresh_url: refreshUrl,
      system_app: options.systemApp ?? false,
      api_version: options.apiVersion ?? 1,
    });
  }

  rotateAppSigningSecret(appid: string, overlapMinutes?: number): Promise<RotatedSigningSecret> {
    return this.request('POST', `/v1/admin/apps/${seg(appid)}/rotate-signing-secret`, overlapMinutes === undefined ? {} : { overlap_minutes: overlapMinutes });
  }

  rotateProviderSigningSecret(provider: string, overlapMinutes?: number): Promise<RotatedSigningSecret> {
    return this.request('POST', `/v1/admin/providers/${seg(provider)}/rotate-signing-secret`, overlapMinutes === undefined ? {} : { overlap_minutes: overlapMinutes });
  }
}

export interface PeriodicFetchSetting {
  enabled: boolean;
  source: { url: string } | { cloud: { env: string; function: string } };
  gray?: { url: string; percent: number; testers: string[] } | null;
}

export interface FetchNowResult {
  outcome: string;
  http_status: number | null;
  time_stamp: number | null;
}

/** Calls made with an app's developer key (`rfda_`). */
export class RefreshdDeveloper extends ApiClient {
  putPeriodicFetch(appid: string, setting: PeriodicFetchSetting): Promise<unknown> {
    return this.request('PUT', `/v1/apps/${seg(appid)}/periodic-fetch`, { gray: null, ...setting });
  }

  /** Fetches the user's data now; answers once the fetch has finished, whatever its outcome. */
  fetchNow(appid: string, userId: string): Promise<FetchNowResult> {
    return this.request('POST', `/v1/apps/${seg(appid)}/periodic-fetch/fetch-now`, { user_id: userId });
  }

  fetchLog(appid: string, userId: string): Promise<unknown[]> {
    return this.request('GET', `/v1/apps/${seg(appid)}/periodic-fetch/log?user_id=${encodeURIComponent(userId)}`);
  }
}

/** Calls made with a widget provider's key (`rfdp_`). */
export class RefreshdProvider extends ApiClient {
  putFormConfig(provider: string, config: unknown): Promise<{ warnings: unknown[] }> {
    return this.request('PUT', `/v1/providers/${seg(provider)}/form-config`, config);
  }

  /** The provider's own update of a form's data, pushed to the host. */
  async putFormData(formId: string, data: unknown): Promise<void> {
    await this.request('PUT', `/v1/forms/${seg(formId)}/data`, data);
  }
}
