/* ProcessPrng for Wine 8.0, which lacks bcryptprimitives.dll (added in Wine 9).
 *
 * The Rust standard library takes its random numbers from ProcessPrng since
 * Rust 1.78, so every Rust extension built since (rpds-py, which jsonschema
 * needs) fails to load under Wine 8 with "DLL load failed". Windows 10+ has
 * this DLL; the Windows lane puts this one beside python.exe. It asks the
 * system RNG, as the real ProcessPrng does, and always succeeds like it.
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
